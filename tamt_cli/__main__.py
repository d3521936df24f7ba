"""`python -m tamt_cli` (what `accelerate launch -m tamt_cli` and `torchrun -m` run)."""

from tamt_cli.launch import main

if __name__ == "__main__":
    raise SystemExit(main())
