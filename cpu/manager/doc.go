// Package manager is the processor's file manager in the NASD sense: it
// holds the keys of the disks it manages (handed over by the testbed at up
// as files, never over the network) and mints the capabilities its
// clients, and the peripherals it orders about, present to those disks.
// A disk in open mode needs none: Mint returns the all-zero field.
package manager
