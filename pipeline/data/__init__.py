"""Data: what the stages read and write, and nothing that trains.

hapt.py          the embedded HAPT recordings: their package, layout and readers
safe_pickle.py   a restricted unpickler for the old-pandas HAPT pickle
signals.py       UCI HAR preprocessing, windowing, features, noise profiles
competition.py   a competition folder in the original layout: reading, writing, submissions
datasets.py      a prepared competition as training arrays, data cards, validation definitions
scoring.py       accuracy at several noise levels, submission checks, Kaggle-like scoring
kaggle_client.py the real kaggle client: downloads and submissions (named so it never reads as the package itself)
"""
