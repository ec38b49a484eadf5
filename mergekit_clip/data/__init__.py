"""DeepfakeBench-format data: reader (`deepfakebench`), validator (`validate`), image pipeline (`transforms`),
synthetic benchmark (`synthetic`) and the `mergekit-clip data` CLI (`cli`). See docs/data.md."""
