// Package cluster is the agent that lets one testbed span several hosts.
//
// Every host runs one agent (`netstation agent`). Agents form a memberlist
// cluster on the underlay network, one member per host, as Docker's overlay
// network does; a member's metadata carries its host name, underlay
// address, RPC port and underlay MTU. Next to the gossip port each agent
// serves an RPC port (the JSON-lines protocol of internal/ctl over TCP)
// for its peers, and a unix socket in its state root for the CLI.
//
// `netstation up` of a topology with a hosts list goes to the local agent,
// which checks that every listed host has a live agent, picks the subnet
// and the peripherals' MTU (the smallest underlay MTU minus the VXLAN
// overhead) once, and asks each host's agent to bring up its part with
// testbed.Up; every host derives the same plan from the same topology
// (addresses, MACs, VNIs), and each supervisor builds only its own nodes
// plus one VXLAN device per segment. If any host fails, every host's part
// is removed again.
//
// The agents keep the VXLAN forwarding databases right by reconciling them
// from membership every few seconds and on every membership event, not
// only on events: each live peer host gets a default (flooding) entry, and
// each node on a live peer host a unicast entry to that host. They re-join
// their seeds and every host they ever saw periodically, so a partition
// heals by itself. `down` from any host asks every live agent to remove its
// part and leaves a tombstone that gossip (memberlist's push/pull state)
// carries to hosts that were unreachable: a host that comes back with a
// part of a testbed downed meanwhile removes it.
package cluster
