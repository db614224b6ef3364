runtime "podman" {}
