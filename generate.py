"""`python generate.py ckpt_path=<checkpoint> n=<count> out=<file.h5> [key=value ...]`: see abr_lab/generate.py."""

from abr_lab.generate import main

if __name__ == "__main__":
    main()
