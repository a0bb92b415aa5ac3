"""`python predict.py ckpt_path=<checkpoint> input=<file|folder> [key=value ...]`: see abr_lab/predict.py."""

from abr_lab.predict import main

if __name__ == "__main__":
    main()
