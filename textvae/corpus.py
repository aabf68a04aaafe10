"""The built-in corpus: sentences from a small English grammar with known generative factors.

``textvae train --out R`` with no data arguments trains on this corpus; it needs no network.
Each sentence is generated from four factors chosen first, and each factor changes many of
its words, so whether a VAE's latent space learned them can be checked (colour a PCA map of
posterior means by topic, probe ``z`` for tense):

    topic      animals | weather | food | sport | travel: the nouns, verbs, adjectives, places
    tense      past | present | future: every verb (chased / chases / will chase, was / is /
               will be) and the time adverbial (yesterday / every day / tomorrow)
    sentiment  positive | negative: adjectives, adverbs, attitude verbs and reactions
               (friendly / grumpy, happily / sadly, loved / hated, cheered / complained)
    length     short | long: one clause, or two clauses joined by "and", "so" or "because",
               usually with a prepositional phrase of place ("in the park")

Text is lower case, one space between tokens, punctuation as separate tokens::

    the playful puppies happily chased a new ball .
    we will feel sad because the icy wind will sweep across the empty valley tomorrow .

Deterministic for a given ``(n, seed)`` on every Python version: the only random draw is
``random.Random(seed).random()``, whose sequence Python guarantees, and every choice indexes
a tuple. ``data/builtin/README.md`` is the data card.
"""

import random
from itertools import islice

from .errors import DataError

TOPICS = ("animals", "weather", "food", "sport", "travel")
TENSES = ("past", "present", "future")
SENTIMENTS = ("positive", "negative")
LENGTHS = ("short", "long")
FACTORS = ("topic", "tense", "sentiment", "length")
FACTOR_VALUES = {"topic": TOPICS, "tense": TENSES, "sentiment": SENTIMENTS, "length": LENGTHS}
MIN_TOKENS, MAX_TOKENS = 5, 25  # sentence length in tokens, final "." included


# ---------------------------------------------------------------------------------------------
# Lexicon. Words are space-separated strings; verbs are "base|third person|past" so that
# irregular and multi-word verbs ("pass over|passes over|passed over") need no morphology.


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _verbs(*specs: str) -> tuple[tuple[str, str, str], ...]:
    return tuple(tuple(spec.split("|")) for spec in specs)


def _by_sentiment(positive: str, negative: str) -> dict[str, tuple[str, ...]]:
    return {"positive": _words(positive), "negative": _words(negative)}


def _transitive(*entries: tuple[str, ...]) -> tuple:
    """(verb spec, objects it takes[, the one sentiment it fits]) entries ->
    ((base, third, past), (object, ...), (sentiment, ...)) entries."""
    return tuple((_verbs(e[0])[0], _words(e[1]), e[2:] or SENTIMENTS) for e in entries)


_HUMAN_ADVERBS = _by_sentiment("happily cheerfully eagerly proudly calmly",
                               "sadly angrily nervously grumpily reluctantly")

_LEXICON = {
    "animals": {
        "agents": _words("dog cat horse rabbit fox puppy pony goat mouse elephant"),
        "agent_adj": _by_sentiment("friendly playful clever gentle happy calm",
                                   "angry noisy grumpy nervous sick scared"),
        "transitive": _transitive(
            ("chase|chases|chased", "ball stick leaf toy"),
            ("catch|catches|caught", "ball stick toy"),
            ("carry|carries|carried", "stick bone toy basket blanket"),
            ("find|finds|found", "bone toy ball carrot apple"),
            ("eat|eats|ate", "carrot apple"),
            ("bring|brings|brought", "ball stick toy basket blanket"),
        ),
        "thing_adj": _by_sentiment("clean new lovely soft", "dirty muddy wet smelly"),
        "intransitive": _verbs("run|runs|ran", "jump|jumps|jumped", "play|plays|played",
                               "sleep|sleeps|slept", "rest|rests|rested", "hide|hides|hid"),
        "adverbs": _by_sentiment("happily cheerfully eagerly calmly playfully",
                                 "sadly angrily nervously lazily grumpily"),
        "places": ("in park", "in garden", "in barn", "in field", "by river", "near pond"),
        "people": _words("farmer vet child"),
        "clauses": ("act", "act", "move", "state", "thing", "attitude"),
    },
    "weather": {
        "agents": _words("sun wind rain snow storm fog frost clouds"),
        "definite_agents": True,  # "the storm", never "my storm"
        "agent_adj": _by_sentiment("warm gentle mild pleasant lovely",
                                   "cold harsh bitter icy fierce"),
        "transitive": tuple(
            (verb, _words("town village city coast valley hill field island"), SENTIMENTS)
            for verb in _verbs("reach|reaches|reached", "cross|crosses|crossed",
                               "pass over|passes over|passed over",
                               "sweep across|sweeps across|swept across", "leave|leaves|left")),
        "thing_adj": _by_sentiment("quiet peaceful green sleepy pretty",
                                   "empty dark lonely muddy gloomy"),
        "intransitive": _verbs("arrive|arrives|arrived", "return|returns|returned",
                               "stay|stays|stayed", "linger|lingers|lingered",
                               "appear|appears|appeared"),
        "adverbs": _by_sentiment("gently softly quietly calmly peacefully",
                                 "fiercely harshly wildly violently bitterly"),
        "places": ("over mountains", "across country", "along coast", "in north", "over sea"),
        "people": _words("farmer gardener sailor"),
        "it_adj": _by_sentiment("sunny warm bright clear mild", "cold windy rainy grey foggy"),
        "it_verbs": _verbs("rain|rains|rained", "snow|snows|snowed", "drizzle|drizzles|drizzled"),
        "it_adverbs": _by_sentiment("gently softly lightly", "heavily hard constantly"),
        "clauses": ("act", "move", "state", "thing", "attitude", "it_be", "it_verb"),
    },
    "food": {
        "agents": _words("chef cook baker waiter guest grandmother uncle"),
        "agent_adj": _by_sentiment("cheerful friendly kind proud talented",
                                   "rude tired grumpy careless unhappy"),
        "transitive": _transitive(
            ("cook|cooks|cooked", "soup pasta curry meal omelette"),
            ("bake|bakes|baked", "bread cake pie pizza"),
            ("eat|eats|ate", "soup bread cake pie pizza salad sandwich cheese pasta curry "
                             "omelette meal"),
            ("serve|serves|served", "soup bread cake pie pizza salad sandwich cheese pasta "
                                    "curry omelette tea coffee meal"),
            ("make|makes|made", "soup bread cake pie pizza salad sandwich pasta curry omelette "
                                "tea coffee meal"),
            ("share|shares|shared", "cake pie pizza sandwich meal bread cheese"),
            ("burn|burns|burnt", "soup bread cake pie pizza pasta curry omelette", "negative"),
        ),
        "thing_adj": _by_sentiment("delicious fresh tasty warm sweet",
                                   "stale bland cold salty soggy"),
        "intransitive": _verbs("cook|cooks|cooked", "eat|eats|ate", "wait|waits|waited",
                               "work|works|worked"),
        "adverbs": _HUMAN_ADVERBS,
        "places": ("in kitchen", "at restaurant", "in cafe", "at market", "at picnic"),
        "taste_verbs": _verbs("taste|tastes|tasted", "smell|smells|smelled", "look|looks|looked"),
        "clauses": ("act", "act", "move", "state", "thing", "attitude", "taste"),
    },
    "sport": {
        "agents": _words("team player coach runner swimmer captain goalkeeper athlete"),
        "agent_adj": _by_sentiment("strong fast brave skilful confident",
                                   "slow tired weak clumsy careless"),
        "transitive": _transitive(
            ("win|wins|won", "match game race trophy medal cup final", "positive"),
            ("lose|loses|lost", "match game race final", "negative"),
            ("play|plays|played", "match game final"),
            ("score|scores|scored", "goal penalty"),
            ("watch|watches|watched", "match game race final"),
            ("miss|misses|missed", "goal penalty", "negative"),
            ("finish|finishes|finished", "race match game"),
        ),
        "thing_adj": _by_sentiment("exciting brilliant great amazing",
                                   "boring dull terrible awful"),
        "intransitive": _verbs("train|trains|trained", "run|runs|ran", "swim|swims|swam",
                               "play|plays|played", "practise|practises|practised"),
        "adverbs": _HUMAN_ADVERBS,
        "places": ("at stadium", "on pitch", "in gym", "on track", "in pool"),
        "people": _words("fan supporter coach"),
        "clauses": ("act", "act", "move", "state", "thing", "attitude"),
    },
    "travel": {
        "agents": _words("traveller tourist pilot driver guide passenger family"),
        "agent_adj": _by_sentiment("relaxed excited cheerful friendly calm",
                                   "exhausted lost bored annoyed rude"),
        "transitive": _transitive(
            ("catch|catches|caught", "train bus plane ferry taxi flight"),
            ("miss|misses|missed", "train bus plane ferry flight", "negative"),
            ("book|books|booked", "flight trip hotel room tour taxi"),
            ("take|takes|took", "train bus plane ferry taxi flight trip tour"),
            ("visit|visits|visited", "museum castle market"),
            ("find|finds|found", "hotel room market museum"),
        ),
        "thing_adj": _by_sentiment("comfortable cheap beautiful modern quiet",
                                   "crowded expensive dirty noisy uncomfortable"),
        "intransitive": _verbs("travel|travels|travelled", "arrive|arrives|arrived",
                               "wait|waits|waited", "walk|walks|walked", "fly|flies|flew"),
        "adverbs": _HUMAN_ADVERBS,
        "places": ("at airport", "at station", "in city", "on island", "on beach",
                   "in mountains"),
        "clauses": ("act", "act", "move", "state", "thing", "attitude"),
    },
}

# Shared by every topic. People are (words, agreement): "sg" third person singular, "pl"
# plural (we, they, you too), "i" first person singular (I am, I was, I chase).
_PEOPLE = (("i", "i"), ("we", "pl"), ("they", "pl"), ("she", "sg"), ("he", "sg"),
           ("everyone", "sg"), ("my sister", "sg"), ("my brother", "sg"), ("my friends", "pl"),
           ("my parents", "pl"), ("our neighbours", "pl"))
_ATTITUDE_VERBS = {
    "positive": _verbs("love|loves|loved", "like|likes|liked", "enjoy|enjoys|enjoyed",
                       "admire|admires|admired"),
    "negative": _verbs("hate|hates|hated", "dislike|dislikes|disliked", "avoid|avoids|avoided",
                       "complain about|complains about|complained about"),
}
_REACTION_VERBS = {
    "positive": _verbs("smile|smiles|smiled", "cheer|cheers|cheered", "laugh|laughs|laughed",
                       "celebrate|celebrates|celebrated"),
    "negative": _verbs("cry|cries|cried", "complain|complains|complained", "sigh|sighs|sighed",
                       "groan|groans|groaned"),
}
_FEEL = _verbs("feel|feels|felt")[0]
_EMOTIONS = _by_sentiment("happy glad proud calm lucky excited",
                          "sad upset angry tired worried bored")
_INTENSIFIERS = _words("very really quite")
_TIMES = {
    "past": ("yesterday", "last night", "last week", "last summer", "last winter", "two days ago"),
    "present": ("every day", "every morning", "every week", "every summer", "every winter",
                "most days"),
    "future": ("tomorrow", "tonight", "next week", "next summer", "next winter", "soon"),
}
_BE = {
    "past": {"sg": "was", "pl": "were", "i": "was"},
    "present": {"sg": "is", "pl": "are", "i": "am"},
    "future": {"sg": "will be", "pl": "will be", "i": "will be"},
}
# Determiners by noun number and whether the phrase must be definite ("the" is drawn apart).
_DETERMINERS = {
    ("singular", False): _words("a a a my our their this that"),
    ("singular", True): _words("my our their this that"),
    ("plural", False): _words("my our their these those some two three many"),
    ("plural", True): _words("my our their these those"),
    ("uncountable", False): _words("my our their this that some"),
    ("uncountable", True): _words("my our their this that"),
}
# Nouns never pluralised (mass nouns, and "sun") and nouns that are only plural.
_UNCOUNTABLE = _words("sun rain snow fog frost soup bread cheese pasta tea coffee")
_PLURAL_ONLY = _words("clouds")
_IRREGULAR_PLURALS = {"mouse": "mice", "child": "children", "leaf": "leaves"}


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _article(next_word: str) -> str:
    # Spelling decides; the lexicon has no "hour" or "unicorn" where sound and letter differ.
    return "an" if next_word[0] in "aeiou" else "a"


def _things(lex: dict) -> tuple[str, ...]:
    """Every object of the topic's transitive verbs, in first-seen order."""
    seen: list[str] = []
    for _, objects, _ in lex["transitive"]:
        seen.extend(o for o in objects if o not in seen)
    return tuple(seen)


# ---------------------------------------------------------------------------------------------
# One sentence: a builder draws words for fixed factor values; clauses are small functions.


class _Builder:
    """Draws the words of one sentence for a fixed topic, tense and sentiment."""

    def __init__(self, rng: random.Random, topic: str, tense: str, sentiment: str):
        self.rng, self.tense, self.sentiment = rng, tense, sentiment
        self.lex = _LEXICON[topic]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, options):
        return options[int(self.rng.random() * len(options))]

    def sentiment_word(self, key: str) -> str:
        return self.pick(self.lex[key][self.sentiment])

    def noun_phrase(self, noun: str, adjective: str | None = None, definite: bool = False,
                    the_only: bool = False) -> tuple[list[str], str]:
        """Determiner, optional adjective, noun; returns (tokens, verb agreement)."""
        if noun in _UNCOUNTABLE:
            number = "uncountable"
        elif noun in _PLURAL_ONLY or self.chance(0.3):
            number = "plural"
        else:
            number = "singular"
        if number == "plural" and noun not in _PLURAL_ONLY:
            noun = _plural(noun)
        words = [adjective, noun] if adjective else [noun]
        det = "the" if the_only or self.chance(0.5) else self.pick(_DETERMINERS[number, definite])
        if det == "a":
            det = _article(words[0])
        return [det, *words], "pl" if number == "plural" else "sg"

    def agent(self, adjective: bool, definite: bool = False) -> tuple[list[str], str]:
        adj = self.sentiment_word("agent_adj") if adjective else None
        return self.noun_phrase(self.pick(self.lex["agents"]), adj, definite,
                                the_only=self.lex.get("definite_agents", False))

    def thing(self, noun: str, adjective: bool, definite: bool = False) -> tuple[list[str], str]:
        adj = self.sentiment_word("thing_adj") if adjective else None
        return self.noun_phrase(noun, adj, definite)

    def person(self) -> tuple[list[str], str]:
        if self.chance(0.5):
            words, agreement = self.pick(_PEOPLE)
            return words.split(), agreement
        noun = self.pick(self.lex.get("people", self.lex["agents"]))
        return self.noun_phrase(noun, the_only=True)

    def verb(self, verb: tuple[str, str, str], agreement: str,
             adverb: str | None = None) -> list[str]:
        """The verb in this sentence's tense, with an optional adverb before it."""
        base, third, past = verb
        form = {"past": past, "present": third if agreement == "sg" else base, "future": base}
        words = ([adverb] if adverb else []) + form[self.tense].split()
        return ["will", *words] if self.tense == "future" else words  # will happily chase

    def be(self, agreement: str) -> list[str]:
        return _BE[self.tense][agreement].split()

    def predicate(self, key: str) -> list[str]:
        adjective = self.sentiment_word(key)
        return [self.pick(_INTENSIFIERS), adjective] if self.chance(0.3) else [adjective]

    def place(self) -> list[str]:
        preposition, noun = self.pick(self.lex["places"]).split()
        return [preposition, "the", noun]

    def time(self) -> list[str]:
        return self.pick(_TIMES[self.tense]).split()


def _act(b: _Builder) -> list[str]:
    """Agent, transitive verb, object: "the friendly dog happily chased a ball"."""
    subject_adj, object_adj, adverb = b.chance(0.4), b.chance(0.5), b.chance(0.5)
    adverb = adverb or not (subject_adj or object_adj)  # at least one sentiment word
    subject, agreement = b.agent(subject_adj)
    verb, objects, _ = b.pick([t for t in b.lex["transitive"] if b.sentiment in t[2]])
    obj, _ = b.thing(b.pick(objects), object_adj)
    if not adverb:
        return subject + b.verb(verb, agreement) + obj
    if b.chance(0.5):
        return subject + b.verb(verb, agreement, b.sentiment_word("adverbs")) + obj
    return subject + b.verb(verb, agreement) + obj + [b.sentiment_word("adverbs")]


def _move(b: _Builder) -> list[str]:
    """Agent, intransitive verb, adverb: "the puppies played happily"."""
    subject, agreement = b.agent(b.chance(0.4))
    verb = b.verb(b.pick(b.lex["intransitive"]), agreement)
    return subject + verb + [b.sentiment_word("adverbs")]


def _state(b: _Builder) -> list[str]:
    """Agent, be, adjective: "the cat was grumpy"."""
    subject, agreement = b.agent(adjective=False, definite=True)
    return subject + b.be(agreement) + b.predicate("agent_adj")


def _thing(b: _Builder) -> list[str]:
    """Thing, be, adjective: "the soup was delicious"."""
    subject, agreement = b.thing(b.pick(_things(b.lex)), adjective=False, definite=True)
    return subject + b.be(agreement) + b.predicate("thing_adj")


def _attitude(b: _Builder) -> list[str]:
    """Person, attitude verb, agent or thing: "we loved the warm sun"."""
    subject, agreement = b.person()
    verb = b.pick(_ATTITUDE_VERBS[b.sentiment])
    if b.chance(0.5):
        obj, _ = b.agent(adjective=b.chance(0.5))
    else:
        obj, _ = b.thing(b.pick(_things(b.lex)), adjective=b.chance(0.5))
    return subject + b.verb(verb, agreement) + obj


def _it_be(b: _Builder) -> list[str]:
    """Weather: "it was sunny"."""
    return ["it"] + b.be("sg") + b.predicate("it_adj")


def _it_verb(b: _Builder) -> list[str]:
    """Weather: "it rained heavily"."""
    return ["it"] + b.verb(b.pick(b.lex["it_verbs"]), "sg") + [b.sentiment_word("it_adverbs")]


def _taste(b: _Builder) -> list[str]:
    """Food: "the bread smelled fresh"."""
    subject, agreement = b.thing(b.pick(_things(b.lex)), adjective=False, definite=True)
    return subject + b.verb(b.pick(b.lex["taste_verbs"]), agreement) + b.predicate("thing_adj")


def _reaction(b: _Builder) -> list[str]:
    """How people took it: "we felt happy", "everyone complained", "my friends were upset"."""
    words, agreement = b.pick(_PEOPLE)
    kind = b.pick(("feel", "be", "verb"))
    if kind == "feel":
        return words.split() + b.verb(_FEEL, agreement) + [b.pick(_EMOTIONS[b.sentiment])]
    if kind == "be":
        return words.split() + b.be(agreement) + [b.pick(_EMOTIONS[b.sentiment])]
    return words.split() + b.verb(b.pick(_REACTION_VERBS[b.sentiment]), agreement)


_PLACED = ("act", "move", "attitude", "it_be", "it_verb")  # clauses that read well with a place
_CLAUSES = {"act": _act, "move": _move, "state": _state, "thing": _thing, "attitude": _attitude,
            "it_be": _it_be, "it_verb": _it_verb, "taste": _taste}


# How a long sentence joins its main clause (with place and time) to a second clause: a
# reaction ("we felt happy") or another clause of the topic.
_JOINS = (
    ("reaction", "{main} , and {second}"),
    ("reaction", "{main} , so {second}"),
    ("reaction", "{second} because {main}"),
    ("topic", "{main} , and {second}"),
    ("topic", "{main} because {second}"),
)


def _long(b: _Builder, main: list[str]) -> list[str]:
    second_kind, layout = b.pick(_JOINS)
    second = _reaction(b) if second_kind == "reaction" else _CLAUSES[b.pick(b.lex["clauses"])](b)
    return layout.format(main=" ".join(main), second=" ".join(second)).split()


def _sentence(rng: random.Random, topic: str, tense: str, sentiment: str, length: str) -> str:
    b = _Builder(rng, topic, tense, sentiment)
    while True:  # redraw the rare sentence outside [MIN_TOKENS, MAX_TOKENS]
        kind = b.pick(b.lex["clauses"])
        main = _CLAUSES[kind](b)
        if length == "long" and kind in _PLACED and b.chance(0.7):
            main += b.place()
        if b.chance(0.4):
            main += b.time()
        tokens = (_long(b, main) if length == "long" else main) + ["."]
        if MIN_TOKENS <= len(tokens) <= MAX_TOKENS:
            return " ".join(tokens)


# ---------------------------------------------------------------------------------------------
# Corpus: factor values drawn in shuffled blocks of every combination, so each value is equally
# frequent and the factors are independent.

_CELLS = tuple((topic, tense, sentiment, length) for topic in TOPICS for tense in TENSES
               for sentiment in SENTIMENTS for length in LENGTHS)


def _stream(seed: int):
    rng = random.Random(seed)
    while True:
        cells = list(_CELLS)
        for i in range(len(cells) - 1, 0, -1):  # Fisher-Yates with rng.random() only
            j = int(rng.random() * (i + 1))
            cells[i], cells[j] = cells[j], cells[i]
        for topic, tense, sentiment, length in cells:
            yield {"text": _sentence(rng, topic, tense, sentiment, length), "topic": topic,
                   "tense": tense, "sentiment": sentiment, "length": length}


def draw_examples(n: int, seed: int = 0) -> list[dict]:
    """``n`` sentences from the grammar, each ``{"text", "topic", "tense", "sentiment", "length"}``.

    Every block of 60 consecutive examples holds each combination of factor values once, in a
    random order. Texts may repeat; :func:`builtin_corpus` removes repeats. ``draw_examples(n, s)``
    is a prefix of ``draw_examples(n + k, s)``.
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    return list(islice(_stream(seed), n))


def builtin_corpus(size: int = 6000, seed: int = 0) -> dict[str, list[dict]]:
    """The built-in corpus: ``size`` distinct sentences split 90/5/5 into train/valid/test.

    No text occurs twice, so the splits share none; repeats drawn from the grammar are skipped
    and more sentences are drawn until ``size`` are distinct.
    """
    if size < 3:
        raise DataError(f"the built-in corpus needs at least 3 sentences (one per split), got "
                        f"{size}; set data.builtin_size=3 or more")
    examples: list[dict] = []
    seen: set[str] = set()  # membership only; order comes from the stream
    max_draws = 20 * size + 1000
    for draws, example in enumerate(_stream(seed), start=1):
        if example["text"] not in seen:
            seen.add(example["text"])
            examples.append(example)
            if len(examples) == size:
                break
        if draws >= max_draws:
            raise DataError(f"the built-in grammar gave only {len(examples)} distinct sentences "
                            f"in {draws} draws; set a smaller data.builtin_size than {size}")
    held_out = max(1, round(size / 20))  # 5% each for valid and test
    n_train = size - 2 * held_out
    return {"train": examples[:n_train],
            "valid": examples[n_train:n_train + held_out],
            "test": examples[n_train + held_out:]}
