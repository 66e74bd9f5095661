// Package layout checks the shape of the repository: the layers of
// docs/ARCHITECTURE.md, in which a package imports only what stands below
// it. Its test is all of it.
package layout
