"""Tools that live beside the package, not in it: the speed harness (`speed`, run by
`python -m launch.benchmark`) and the PyTorch reference it is compared with
(`pytorch_reference`). Both run from the repository root; docs/benchmarks.md has the tables."""
