"""`python train.py model=<family> [overrides]`: see abr_lab/train.py and conf/train.yaml."""

from abr_lab.train import main

if __name__ == "__main__":
    main()
