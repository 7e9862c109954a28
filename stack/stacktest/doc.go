// Package stacktest is the fixture of tests that need two user-level
// stacks talking: two stacks on an in-memory link pair (stack/link/mem),
// no root, no namespace. It is for tests only; packages import it from
// their _test files.
package stacktest
