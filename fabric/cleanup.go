package fabric

import (
	"errors"
	"fmt"
	"strings"
)

// Cleanup deletes every host link whose name starts with prefix (a veth
// takes its peer with it) and then every namespace whose name starts with
// prefix, and returns all the errors it met joined. The links inside the
// namespaces go with them. An empty prefix is refused: it would match
// everything.
func (s *Session) Cleanup(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("fabric: cleanup: empty prefix: %w", ErrInvalid)
	}
	var errs []error
	e, err := s.entry("")
	if err != nil {
		errs = append(errs, fmt.Errorf("fabric: cleanup: %w", err))
	} else {
		links, err := retryDump(e.h.LinkList)
		if err != nil {
			errs = append(errs, fmt.Errorf("fabric: cleanup: list host links: %w", err))
		}
		for _, l := range links {
			if !strings.HasPrefix(l.Attrs().Name, prefix) {
				continue
			}
			// A veth whose peer went first is gone already.
			if err := e.h.LinkDel(l); err != nil && !notFound(err) {
				errs = append(errs, fmt.Errorf("fabric: cleanup: delete host link %s: %w", l.Attrs().Name, err))
			}
		}
	}
	names, err := ListNetns(prefix)
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range names {
		if err := s.DeleteNetns(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
