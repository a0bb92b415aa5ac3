"""`python evaluate.py ckpt_path=<checkpoint> [key=value ...]`: see abr_lab/evaluate.py."""

from abr_lab.evaluate import main

if __name__ == "__main__":
    main()
