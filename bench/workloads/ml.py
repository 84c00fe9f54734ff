"""ml: TF-IDF features and a logistic regression on generated text (scikit-learn)."""

import random

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

WORDS = [f"w{i}" for i in range(500)]


def _corpus(docs, rng):
    texts, labels = [], []
    for _ in range(docs):
        label = rng.randrange(2)
        # Each class draws more often from its own half of the vocabulary.
        half = WORDS[label * 250 : (label + 1) * 250]
        words = [rng.choice(half if rng.random() < 0.7 else WORDS) for _ in range(30)]
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def main(args):
    docs = int(args.get("docs", 200))
    rng = random.Random(int(args.get("seed", 1)))
    texts, labels = _corpus(docs, rng)
    vec = TfidfVectorizer()
    features = vec.fit_transform(texts)
    model = LogisticRegression(max_iter=200).fit(features, labels)
    test, truth = _corpus(50, rng)
    predicted = model.predict(vec.transform(test))
    accuracy = sum(int(p == t) for p, t in zip(predicted, truth, strict=True)) / len(truth)
    return {"docs": docs, "features": features.shape[1], "accuracy": accuracy}
