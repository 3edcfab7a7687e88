"""Generate the evaluation sets shipped in src/llmops_lib/evals/data/ (deterministic: no download, fixed seeds).

    .venv/bin/python scripts/make_eval_sets.py            # rewrite the committed files
    .venv/bin/python scripts/make_eval_sets.py --out DIR  # write elsewhere (the test compares byte for byte)

Each line: {"id", "inputs", "expected", "split"}. Splits are fixed here (30 % train, 30 % dev, 40 % test,
shuffled with the task's seed), so a prompt tuned on train/dev is reported once on a test split it never saw.
What each task means and how it is scored lives in `llmops_lib.evals.tasks.TASK_INFO`; the lm-evaluation-harness
task YAMLs (`lm_eval/llmops_<task>.yaml`) are written from it too, so they cannot drift from the reference prompt.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

from llmops_lib.evals.tasks import TASK_INFO

DATA_DIR = Path(__file__).resolve().parents[1] / "src" / "llmops_lib" / "evals" / "data"
SPLITS = (("train", 0.3), ("dev", 0.3), ("test", 0.4))

# Countries with one undisputed capital and one usual spelling of it (no split seats such as the
# Netherlands or Bolivia, no renamed or moving capitals, no city-states, no US-state namesakes).
CAPITALS = {
    "Afghanistan": "Kabul", "Albania": "Tirana", "Algeria": "Algiers", "Angola": "Luanda",
    "Argentina": "Buenos Aires", "Armenia": "Yerevan", "Australia": "Canberra", "Austria": "Vienna",
    "Azerbaijan": "Baku", "Bahamas": "Nassau", "Bahrain": "Manama", "Bangladesh": "Dhaka",
    "Barbados": "Bridgetown", "Belarus": "Minsk", "Belgium": "Brussels", "Belize": "Belmopan",
    "Bhutan": "Thimphu", "Bosnia and Herzegovina": "Sarajevo", "Botswana": "Gaborone", "Brazil": "Brasília",
    "Bulgaria": "Sofia", "Burkina Faso": "Ouagadougou", "Cambodia": "Phnom Penh", "Cameroon": "Yaoundé",
    "Canada": "Ottawa", "Cape Verde": "Praia", "Central African Republic": "Bangui", "Chile": "Santiago",
    "China": "Beijing", "Colombia": "Bogotá", "Comoros": "Moroni", "Costa Rica": "San José",
    "Croatia": "Zagreb", "Cuba": "Havana", "Cyprus": "Nicosia", "Czech Republic": "Prague",
    "Denmark": "Copenhagen", "Dominica": "Roseau", "Dominican Republic": "Santo Domingo", "Ecuador": "Quito",
    "Egypt": "Cairo", "El Salvador": "San Salvador", "Eritrea": "Asmara", "Estonia": "Tallinn",
    "Ethiopia": "Addis Ababa", "Fiji": "Suva", "Finland": "Helsinki", "France": "Paris", "Gabon": "Libreville",
    "Gambia": "Banjul", "Germany": "Berlin", "Ghana": "Accra", "Greece": "Athens", "Guinea": "Conakry",
    "Guinea-Bissau": "Bissau", "Guyana": "Georgetown", "Haiti": "Port-au-Prince", "Honduras": "Tegucigalpa",
    "Hungary": "Budapest", "Iceland": "Reykjavík", "India": "New Delhi", "Iran": "Tehran", "Iraq": "Baghdad",
    "Ireland": "Dublin", "Italy": "Rome", "Jamaica": "Kingston", "Japan": "Tokyo", "Jordan": "Amman",
    "Kenya": "Nairobi", "Kyrgyzstan": "Bishkek", "Laos": "Vientiane", "Latvia": "Riga", "Lebanon": "Beirut",
    "Lesotho": "Maseru", "Liberia": "Monrovia", "Libya": "Tripoli", "Liechtenstein": "Vaduz",
    "Lithuania": "Vilnius", "Madagascar": "Antananarivo", "Malawi": "Lilongwe", "Maldives": "Malé",
    "Mali": "Bamako", "Malta": "Valletta", "Mauritania": "Nouakchott", "Mauritius": "Port Louis",
    "Mexico": "Mexico City", "Moldova": "Chișinău", "Montenegro": "Podgorica", "Morocco": "Rabat",
    "Mozambique": "Maputo", "Namibia": "Windhoek", "Nepal": "Kathmandu", "New Zealand": "Wellington",
    "Nicaragua": "Managua", "Niger": "Niamey", "Nigeria": "Abuja", "North Korea": "Pyongyang",
    "North Macedonia": "Skopje", "Norway": "Oslo", "Oman": "Muscat", "Pakistan": "Islamabad",
    "Papua New Guinea": "Port Moresby", "Paraguay": "Asunción", "Peru": "Lima", "Philippines": "Manila",
    "Poland": "Warsaw", "Portugal": "Lisbon", "Qatar": "Doha", "Romania": "Bucharest", "Russia": "Moscow",
    "Rwanda": "Kigali", "Saint Lucia": "Castries", "Samoa": "Apia", "Saudi Arabia": "Riyadh", "Senegal": "Dakar",
    "Serbia": "Belgrade", "Sierra Leone": "Freetown", "Slovakia": "Bratislava", "Slovenia": "Ljubljana",
    "Solomon Islands": "Honiara", "Somalia": "Mogadishu", "South Korea": "Seoul", "South Sudan": "Juba",
    "Spain": "Madrid", "Sudan": "Khartoum", "Suriname": "Paramaribo", "Sweden": "Stockholm",
    "Switzerland": "Bern", "Syria": "Damascus", "Tajikistan": "Dushanbe", "Thailand": "Bangkok",
    "Togo": "Lomé", "Tunisia": "Tunis", "Turkey": "Ankara", "Turkmenistan": "Ashgabat", "Uganda": "Kampala",
    "United Arab Emirates": "Abu Dhabi", "United Kingdom": "London", "United States": "Washington",
    "Uruguay": "Montevideo", "Uzbekistan": "Tashkent", "Vanuatu": "Port Vila", "Venezuela": "Caracas",
    "Vietnam": "Hanoi", "Zambia": "Lusaka", "Zimbabwe": "Harare",
}  # fmt: skip

NAMES = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jamal", "Kenji", "Lena",
         "Marco", "Nora", "Omar", "Priya", "Rosa", "Sam", "Tomas", "Yuki"]  # fmt: skip
ITEMS = ["apples", "books", "marbles", "pencils", "stickers", "cookies", "stamps", "shells"]
CITIES = ["Lisbon", "Toronto", "Nairobi", "Osaka", "Denver", "Lyon", "Cusco", "Dublin", "Hamburg", "Perth",
          "Seville", "Bergen"]  # fmt: skip

PRODUCTS = ["blender", "headphones", "backpack", "novel", "hotel room", "pizza", "phone case", "lamp",
            "jacket", "coffee maker"]  # fmt: skip
POSITIVE = ["excellent", "wonderful", "fantastic", "delightful", "superb", "great"]
NEGATIVE = ["terrible", "awful", "disappointing", "useless", "horrible", "dreadful"]
REVIEW_TEMPLATES = {
    "positive": [
        "The {product} is {word}. I would buy it again.",
        "Simply {word}: this {product} exceeded my hopes.",
        "I love this {product}; it is simply {word}.",
    ],
    "negative": [
        "The {product} is {word}. I want my money back.",
        "Simply {word}: this {product} let me down.",
        "I regret buying this {product}; it is {word}.",
    ],
}

ARITHMETIC_TEMPLATES = [
    ("{name} has {a} {item}. {name} buys {b} more. How many {item} does {name} have now?", lambda a, b: a + b),
    ("{name} had {a} {item} and gave {b} away. How many {item} are left?", lambda a, b: a - b),
    ("A box holds {a} {item}. How many {item} are in {b} boxes?", lambda a, b: a * b),
    ("{name} shares {a} {item} equally among {b} friends. How many {item} does each friend get?", lambda a, b: a // b),
]

EXTRACTION_TEMPLATES = [
    "{name} is {age} years old and lives in {city}.",
    "Meet {name}, a {age}-year-old from {city}.",
    "Living in {city}, {name} turned {age} last month.",
]


def capitals(rng: random.Random) -> list[tuple[dict, object]]:
    return [({"country": country}, capital) for country, capital in CAPITALS.items()]


def arithmetic(rng: random.Random, count: int = 120) -> list[tuple[dict, object]]:
    cases: dict[str, int] = {}
    while len(cases) < count:
        template, answer = rng.choice(ARITHMETIC_TEMPLATES)
        a, b = rng.randint(2, 12), rng.randint(2, 9)
        if "gave" in template:
            a += b  # never more given away than owned
        if "equally" in template:
            a *= b  # shares come out whole
        question = template.format(name=rng.choice(NAMES), item=rng.choice(ITEMS), a=a, b=b)
        cases.setdefault(question, answer(a, b))
    return [({"question": question}, value) for question, value in cases.items()]


def sentiment(rng: random.Random) -> list[tuple[dict, object]]:
    cases = []
    for label, words in (("positive", POSITIVE), ("negative", NEGATIVE)):
        combos = list(itertools.product(REVIEW_TEMPLATES[label], PRODUCTS, words))
        for template, product, word in rng.sample(combos, 60):
            cases.append(({"review": template.format(product=product, word=word)}, label))
    rng.shuffle(cases)  # labels interleaved, not 60 of one then 60 of the other
    return cases


def extraction(rng: random.Random, count: int = 100) -> list[tuple[dict, object]]:
    cases: dict[str, dict] = {}
    while len(cases) < count:
        person = {"name": rng.choice(NAMES), "age": rng.randint(18, 80), "city": rng.choice(CITIES)}
        cases.setdefault(rng.choice(EXTRACTION_TEMPLATES).format(**person), person)
    return [({"text": text}, person) for text, person in cases.items()]


GENERATORS = {"capitals": capitals, "arithmetic": arithmetic, "sentiment": sentiment, "extraction": extraction}


def lines(name: str, seed: int) -> list[str]:
    """The JSONL lines of one task: ids in generation order, splits from a seeded shuffle."""
    rng = random.Random(seed)
    cases = GENERATORS[name](rng)
    order = list(range(len(cases)))
    rng.shuffle(order)
    split_of, start = {}, 0
    for split, share in SPLITS:
        end = len(cases) if split == SPLITS[-1][0] else start + round(share * len(cases))
        split_of.update(dict.fromkeys(order[start:end], split))
        start = end
    return [
        json.dumps(
            {"id": f"{name}-{i:03d}", "inputs": inputs, "expected": expected, "split": split_of[i]}, ensure_ascii=False
        )
        for i, (inputs, expected) in enumerate(cases)
    ]


def lm_eval_yaml(name: str) -> str:
    """lm-eval's task config for one task: the reference prompt and generation settings, scored by our scorer.

    The dataset is the `json` builder over `llmops_<task>.jsonl` in the working directory, which
    `llmops_lib.evals.harness.run_lm_eval` writes (the chosen split, one flat row per case) before it
    runs lm-eval there. Strings are JSON-quoted, which YAML reads as double-quoted scalars.
    """
    info = TASK_INFO[name]
    text = json.dumps  # a JSON string is a YAML double-quoted scalar
    return "\n".join(
        [
            "# Generated by scripts/make_eval_sets.py from llmops_lib.evals.tasks.TASK_INFO: do not edit by hand.",
            f"# {info.description}; scored by llmops_lib's `{info.scorer}` scorer (llmops_scoring.py).",
            f"task: llmops_{name}",
            "dataset_path: json",
            f"dataset_kwargs: {{data_files: {{test: llmops_{name}.jsonl}}}}",
            "test_split: test",
            "output_type: generate_until",
            f"doc_to_text: {text(info.reference.template, ensure_ascii=False)}",
            'doc_to_target: "{{target}}"',
            "generation_kwargs:",
            f"  until: {text(list(info.reference.stop))}",
            f"  max_gen_toks: {info.reference.max_tokens}",
            "  do_sample: false",
            "  temperature: 0",
            "process_results: !function llmops_scoring.process_results",
            "metric_list:",
            "  - {metric: score, aggregation: mean, higher_is_better: true}",
            "metadata: {version: 1.0}",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="folder to write <task>.jsonl into")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(GENERATORS, start=13):
        (out / f"{name}.jsonl").write_text("\n".join(lines(name, seed)) + "\n", encoding="utf-8")
        print(f"{out / name}.jsonl")
        (out / "lm_eval").mkdir(exist_ok=True)
        (out / "lm_eval" / f"llmops_{name}.yaml").write_text(lm_eval_yaml(name), encoding="utf-8")
        print(f"{out}/lm_eval/llmops_{name}.yaml")


if __name__ == "__main__":
    main()
