package testbed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/netstation/netstation/internal/ctl"
)

// ErrNotFound: no testbed of that name exists in the state root.
var ErrNotFound = errors.New("no such testbed")

// ErrNotFound keeps its identity across control sockets and the cluster
// RPC.
func init() { ctl.RegisterCode("testbed.not_found", ErrNotFound) }

// StateRoot is the directory holding one sub-directory per testbed:
// $NETSTATION_STATE_DIR if set, /run/netstation for root, else
// $XDG_RUNTIME_DIR/netstation (or /tmp/netstation-<uid>).
func StateRoot() string {
	if d := os.Getenv("NETSTATION_STATE_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/run/netstation"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "netstation")
	}
	return fmt.Sprintf("/tmp/netstation-%d", os.Getuid())
}

// Dir is the state directory of the named testbed.
func Dir(name string) string { return filepath.Join(StateRoot(), name) }

// List returns the names of the testbeds that have a state directory.
func List() ([]string, error) {
	ents, err := os.ReadDir(StateRoot())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Paths inside a state directory.
func planPath(dir string) string       { return filepath.Join(dir, "plan.json") }
func journalPath(dir string) string    { return filepath.Join(dir, "journal.jsonl") }
func supervisorSock(dir string) string { return filepath.Join(dir, "supervisor.sock") }

// SupervisorSock is the control socket of a testbed's supervisor.
func SupervisorSock(dir string) string { return supervisorSock(dir) }
func supervisorLog(dir string) string  { return filepath.Join(dir, "supervisor.log") }

// NodeSock is the control socket of a peripheral.
func NodeSock(dir, node string) string { return filepath.Join(dir, "nodes", node+".sock") }

// NodeLog is the log file of a peripheral.
func NodeLog(dir, node string) string { return filepath.Join(dir, "nodes", node+".log") }

// NodeDisk is the backing file of a disk peripheral: kept across restarts
// of the peripheral, removed with the testbed.
func NodeDisk(dir, node string) string { return filepath.Join(dir, "nodes", node+".img") }
