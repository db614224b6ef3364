// Package recipes turns gpuforge recipe files (HCL) into a typed, checked [Recipe].
//
// It owns the recipe language: parsing one file or a directory of *.hcl files, input variables
// (defaults, -var, -var-file, GPUFORGE_VAR_*), locals, the function library, references between
// blocks (framework.pytorch, driver.nvidia), matrix and inherits expansion, and the semantic checks
// that run before anything is built. Every problem is an hcl.Diagnostic with an exact source range,
// and loading keeps collecting so that one run reports every finding.
//
// recipes imports no engine, cloud or GPU package: it never touches the network, BuildKit or AWS.
// The data tables the checks consult (NGC releases, GPU architectures, instance types) live in
// the compat subpackage.
package recipes
