"""A built-in English→German demo corpus, generated from a small grammar with no download.

The sentences are simple but the translation is not word-for-word: German articles and
adjective endings depend on gender, number and case (nominative subject, accusative object,
dative after prepositions), and verbs agree with the subject. A model has to learn that to
score well, so the demo exercises the whole toolkit honestly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

# English noun -> (German singular, German plural, gender)
NOUNS = {
    "dog": ("Hund", "Hunde", "m"), "cat": ("Katze", "Katzen", "f"),
    "house": ("Haus", "Häuser", "n"), "man": ("Mann", "Männer", "m"),
    "woman": ("Frau", "Frauen", "f"), "child": ("Kind", "Kinder", "n"),
    "car": ("Auto", "Autos", "n"), "tree": ("Baum", "Bäume", "m"), "bird": ("Vogel", "Vögel", "m"),
    "ball": ("Ball", "Bälle", "m"), "book": ("Buch", "Bücher", "n"), "door": ("Tür", "Türen", "f"),
    "table": ("Tisch", "Tische", "m"), "flower": ("Blume", "Blumen", "f"),
    "horse": ("Pferd", "Pferde", "n"), "teacher": ("Lehrer", "Lehrer", "m"),
    "girl": ("Mädchen", "Mädchen", "n"), "son": ("Sohn", "Söhne", "m"),
    "street": ("Straße", "Straßen", "f"), "boat": ("Boot", "Boote", "n"),
}
PLURAL_EN = {"man": "men", "woman": "women", "child": "children"}
ADJECTIVES = {
    "red": "rot", "small": "klein", "old": "alt", "young": "jung", "big": "groß",
    "green": "grün", "white": "weiß", "black": "schwarz", "happy": "glücklich", "new": "neu",
    "tired": "müde", "fast": "schnell",
}
# English verb (3rd person singular, plural) -> German (singular, plural)
VERBS = {
    ("sees", "see"): ("sieht", "sehen"), ("finds", "find"): ("findet", "finden"),
    ("likes", "like"): ("mag", "mögen"), ("follows", "follow"): ("folgt", "folgen"),
    ("paints", "paint"): ("malt", "malen"), ("watches", "watch"): ("beobachtet", "beobachten"),
    ("hears", "hear"): ("hört", "hören"), ("carries", "carry"): ("trägt", "tragen"),
    ("buys", "buy"): ("kauft", "kaufen"), ("needs", "need"): ("braucht", "brauchen"),
}
PREPOSITIONS = {"near": "neben", "with": "mit", "behind": "hinter", "in front of": "vor"}

DEFINITE = {("nom", "m"): "der", ("nom", "f"): "die", ("nom", "n"): "das",
            ("acc", "m"): "den", ("acc", "f"): "die", ("acc", "n"): "das",
            ("dat", "m"): "dem", ("dat", "f"): "der", ("dat", "n"): "dem",
            ("nom", "pl"): "die", ("acc", "pl"): "die", ("dat", "pl"): "den"}
INDEFINITE = {("nom", "m"): "ein", ("nom", "f"): "eine", ("nom", "n"): "ein",
              ("acc", "m"): "einen", ("acc", "f"): "eine", ("acc", "n"): "ein",
              ("dat", "m"): "einem", ("dat", "f"): "einer", ("dat", "n"): "einem"}
# adjective ending after an indefinite article where it differs from the weak ending
STRONG_AFTER_EIN = {("nom", "m"): "er", ("nom", "n"): "es", ("acc", "n"): "es"}


@dataclass(frozen=True)
class NounPhrase:
    noun: str
    adjective: str | None
    definite: bool
    plural: bool

    def english(self) -> str:
        noun = PLURAL_EN.get(self.noun, self.noun + "s") if self.plural else self.noun
        article = "the" if self.definite else ("" if self.plural else
                                                ("an" if (self.adjective or noun)[0] in "aeiou"
                                                 else "a"))
        words = [article, self.adjective, noun]
        return " ".join(word for word in words if word)

    def german(self, case: str) -> str:
        singular, plural_form, gender = NOUNS[self.noun]
        key = (case, "pl" if self.plural else gender)
        if self.plural and not self.definite:
            article, ending = "", {"nom": "e", "acc": "e", "dat": "en"}[case]
        elif self.definite:
            article = DEFINITE[key]
            ending = "e" if key in {("nom", "m"), ("nom", "f"), ("nom", "n"), ("acc", "f"),
                                    ("acc", "n")} else "en"
        else:
            article = INDEFINITE[key]
            ending = STRONG_AFTER_EIN.get(key, "e" if key in {("nom", "f"), ("acc", "f")} else "en")
        noun = plural_form if self.plural else singular
        if self.plural and case == "dat" and not noun.endswith(("n", "s")):
            noun += "n"
        adjective = _inflect(ADJECTIVES[self.adjective], ending) if self.adjective else ""
        return " ".join(word for word in (article, adjective, noun) if word)


def _inflect(stem: str, ending: str) -> str:
    return stem + (ending[1:] if stem.endswith("e") and ending.startswith("e") else ending)


def _noun_phrase(rng: random.Random) -> NounPhrase:
    return NounPhrase(noun=rng.choice(sorted(NOUNS)),
                      adjective=rng.choice(sorted(ADJECTIVES)) if rng.random() < 0.6 else None,
                      definite=rng.random() < 0.6, plural=rng.random() < 0.25)


def sentence_pair(rng: random.Random) -> tuple[str, str]:
    """One random English sentence and its German translation."""
    subject, obj = _noun_phrase(rng), _noun_phrase(rng)
    (verb_sg, verb_pl), (verb_de_sg, verb_de_pl) = rng.choice(sorted(VERBS.items()))
    english = [subject.english(), verb_pl if subject.plural else verb_sg, obj.english()]
    german = [subject.german("nom"), verb_de_pl if subject.plural else verb_de_sg,
              obj.german("dat" if verb_de_sg == "folgt" else "acc")]
    if rng.random() < 0.4:
        preposition = rng.choice(sorted(PREPOSITIONS))
        place = _noun_phrase(rng)
        english += [preposition, place.english()]
        german += [PREPOSITIONS[preposition], place.german("dat")]
    return _sentence(english), _sentence(german)


def _sentence(words: list[str]) -> str:
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def write_demo_corpus(directory: Path, *, train: int = 12000, valid: int = 500, test: int = 500,
                      seed: int = 1234) -> dict[str, int]:
    """Write train/valid/test .en/.de files with no sentence shared between splits."""
    rng = random.Random(seed)
    seen: set[str] = set()
    counts = {"train": train, "valid": valid, "test": test}
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("test", "valid", "train"):
        pairs = []
        while len(pairs) < counts[split]:
            english, german = sentence_pair(rng)
            if english not in seen:
                seen.add(english)
                pairs.append((english, german))
        for index, lang in enumerate(("en", "de")):
            lines = "".join(pair[index] + "\n" for pair in pairs)
            (directory / f"{split}.{lang}").write_text(lines, encoding="utf-8")
    return counts
