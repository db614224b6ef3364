// Package depcheck holds no code: its test enforces the dependency rules of DESIGN.md, in the
// spirit of go-containerregistry's pkg/registry/depcheck_test.go.
package depcheck
