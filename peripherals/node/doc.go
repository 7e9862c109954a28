// Package node is the peripheral process's main (`netstation node run`):
// it opens the node's port with AF_PACKET and runs the peripherals runtime
// with the node's kind on it. The testbed decides what to run (the
// node's identity, kind, parameters, peers and link settings, from its
// plan: testbed.NodeConfig); this package only runs it, so the process
// body depends on the runtime alone.
package node
