package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// exitError carries a process exit status out of a command (exec).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := newRoot()
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "netstation:", err)
		os.Exit(1)
	}
}

// whichTestbed is the rule every command that acts on one testbed follows.
const whichTestbed = `Which testbed: a command acts on the testbed -t names. Without -t: the only
testbed that is up; with several up, "default" if it is among them (said on
stderr); otherwise the command refuses and lists them. Demos bring the default
testbed up when none is.`

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "netstation",
		Short: "Testbeds of IP-addressed peripherals, each with its own user-level IP stack",
		Long: `netstation builds testbeds of virtual peripherals (cpu, disk, display). Each
peripheral is a process in its own network namespace running its own
user-level IPv4 stack on a veth port of a bridge fabric; peripherals talk to
each other directly over IP.

` + whichTestbed,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newUpCmd(), newDownCmd(), newStatusCmd(), newExecCmd(), newLogsCmd(),
		newPingCmd(), newGraphCmd(), newValidateCmd(), newDemoCmd(), newBenchCmd(),
		newSuperviseCmd(), newNodeCmd(),
		newDisplayCmd(), newViewCmd(), newDiskCmd(),
		newAgentCmd(), newHostsCmd(), newMembersCmd(),
	)
	root.AddCommand(newGendocCmd(root))
	addObservability(root) // link, capture, metrics, status -w (link.go)
	return root
}
