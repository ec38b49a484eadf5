"""``python -m train`` / ``torchrun --nproc_per_node N -m train CONFIG.yaml ...``."""

from train.cli import main

if __name__ == "__main__":
    main(prog_name="clip-train")
