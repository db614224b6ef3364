// Package validate owns the GPU checks: NVML inventory and health on a host, CDI spec
// generation, checks run inside a built image through BuildKit with CDI devices (nvidia-smi,
// a ResNet-50 training smoke benchmark), the reference table of expected throughput per GPU
// model, and the JSON, Markdown and HTML reports. It never imports builders.
package validate
