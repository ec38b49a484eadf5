"""Data: the dataset-format registry and its one dispatch (`formats`: DeepfakeBench JSON, CSV frame lists), the
JSON reader (`deepfakebench`), validator (`validate`), image pipeline (`transforms`), synthetic benchmark
(`synthetic`) and the `mergekit-clip data` CLI (`cli`). See docs/data.md."""
