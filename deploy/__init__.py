"""Deployment artefacts (KubeRay manifests, Prometheus wiring, Grafana dashboard) rendered from the serve config."""
