// Command netstation builds and drives testbeds of IP-addressed
// peripherals: every peripheral a process in its own network namespace with
// its own user-level IPv4 stack, all joined by a bridge fabric.
//
// The command is thin: flags and output. The work lives in package testbed
// and below. Run `netstation --help` for the commands.
package main
