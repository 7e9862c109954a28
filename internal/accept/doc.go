// Package accept is the one accept loop of netstation's servers (control
// sockets, NBD, iperf3, gossip streams). It never spins and never dies on
// a transient failure: running out of file descriptors (EMFILE, ENFILE),
// of buffers, an aborted handshake or an accept timeout make it back off
// (5 ms doubling to 1 s, like net/http) and try again; only the listener's
// closing or an error no retry can cure ends it.
package accept
