"""resfam-serve: the Ray Serve application (torch-free). Never bind ray.serve to the name `serve` here."""
