"""resfam-serve: the ResNet family served by Ray Serve and ONNX Runtime.

Layers, each importing only those below it: `config`, `errors`, `metrics` (shared); `runtime` (models,
replicas, ONNX Runtime); `ab` (the experiment and its evidence); `api` (HTTP and the V2 protocol);
`cluster` (the Ray application and running it locally). docs/ARCHITECTURE.md says more.
"""
