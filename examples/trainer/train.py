"""A placeholder training entry point copied into the ngc-pytorch example image."""

import torch


def main() -> None:
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")


if __name__ == "__main__":
    main()
