// Package registry owns talking to container registries through go-containerregistry: keychains
// (docker config.json, credential helpers, NGC, ECR, the recipe's registry blocks), TLS and
// insecure rules, retries, and the push, copy and inspect operations.
package registry
