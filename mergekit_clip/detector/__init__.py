"""The detector directory: its spec and ``config.json`` (`spec`), the torch model (`model`), reading and atomic
writing (`io`), the Hugging Face CLIP layouts and their tensor names (`layouts`), label names (`labels`), and
``mergekit-clip create`` (`cli`)."""
