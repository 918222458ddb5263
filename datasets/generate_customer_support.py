"""Deterministically generate the sample datasets (templates x slots, seeded RNG).

    python datasets/generate_customer_support.py      # rewrites datasets/customer-support/ and preference-sample/

Fictional company: Acme Gadgets (an online shop for smart-home devices) and its Acme Cloud app plans.
Every assistant reply has the same style so a tiny model can learn it: it opens with "Hi there!" (or
"Thanks!" on a follow-up turn), gives one to three short, concrete sentences, and closes with
"Happy to help!".
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

SEED = 20240601
HERE = Path(__file__).resolve().parent
N_TRAIN, N_VALID = 300, 40
N_PREF_TRAIN, N_PREF_VALID = 30, 10
N_EVAL = 100

PRODUCTS = [
    "SmartPlug Mini",
    "Aura Desk Lamp",
    "HomeHub 2",
    "Breeze Air Purifier",
    "Echo Doorbell",
    "Nimbus Thermostat",
    "Pixel Camera Kit",
    "Volt Power Bank",
    "Lumen Light Strip",
    "Glide Robot Vacuum",
]
CARRIERS = ["UPS", "FedEx", "DHL", "USPS"]
PLANS = {"Basic": 3, "Plus": 8, "Pro": 15}
NAMES = ["Sam", "Priya", "Jordan", "Lena", "Marco", "Aisha", "Tom", "Mei", "Diego", "Hannah", "Omar", "Zoe"]
SYSTEM_PROMPTS = [
    "You are the Acme Gadgets support assistant. Be friendly, brief and concrete.",
    "You answer customer questions for Acme Gadgets and Acme Cloud. Keep replies short and give clear steps.",
    "You are a helpful support agent for Acme Gadgets. Greet the customer, solve the problem, sign off warmly.",
]
SIGN_OFF = "Happy to help!"

Slots = dict[str, str]


def _slots(rng: random.Random) -> Slots:
    plan_from, plan_to = rng.sample(list(PLANS), 2)
    return {
        "order": f"A-{rng.randint(10000, 99999)}",
        "product": rng.choice(PRODUCTS),
        "carrier": rng.choice(CARRIERS),
        "days": str(rng.choice([2, 3, 4, 5])),
        "refund_days": str(rng.choice([3, 5, 7])),
        "name": rng.choice(NAMES),
        "plan_from": plan_from,
        "plan_to": plan_to,
        "price_to": str(PLANS[plan_to]),
        "amount": f"{rng.randint(12, 240)}.{rng.choice(['00', '49', '99'])}",
        "years": str(rng.choice([1, 2])),
        "minutes": str(rng.choice([15, 30, 45])),
    }


# topic -> (user phrasings, assistant bodies). Bodies are the 1-3 sentences between greeting and sign-off.
TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "order_status": (
        [
            "Where is my order {order}?",
            "Hi, my order {order} still hasn't arrived. Can you check it?",
            "Can you tell me the status of order {order}?",
            "I ordered a {product} last week (order {order}). Where is it?",
            "Has order {order} shipped yet?",
        ],
        [
            "Order {order} shipped with {carrier} and should reach you within {days} business days. You can follow it "
            "anytime under Orders in your Acme account, where the tracking link is updated every few hours.",
            "I checked order {order}: it left our warehouse and is now with {carrier}. Expect delivery in about "
            "{days} business days, and you will get an email with the tracking link as soon as it is out for delivery.",
        ],
    ),
    "refund": (
        [
            "I want a refund for order {order}.",
            "How do I get my money back for the {product}?",
            "Can I get a refund? The {product} was not what I expected.",
            "Please refund order {order}, I changed my mind.",
            "When will I see my refund for order {order}?",
        ],
        [
            "You can request a refund under Orders, choose order {order} and tap Request refund. Once we receive "
            "the item, the money is back on your original payment method within {refund_days} business days.",
            "Refunds go back to the card you paid with. After the return is scanned at our warehouse it takes "
            "{refund_days} business days, and we email you the moment it is processed.",
        ],
    ),
    "shipping": (
        [
            "How long does shipping take?",
            "Do you ship with {carrier}?",
            "How much is shipping for a {product}?",
            "Can I get faster delivery on my order?",
            "Do you offer free shipping?",
        ],
        [
            "Standard shipping takes {days} business days and is free on orders over $50. Express delivery in one "
            "to two days is available at checkout for $9.99.",
            "We ship with {carrier} and other major carriers. Standard delivery takes {days} business days, and "
            "you can pick Express at checkout if you need it sooner.",
        ],
    ),
    "password": (
        [
            "I forgot my password.",
            "How do I reset my password?",
            "I can't log in to my Acme account.",
            "My password reset email never arrived.",
            "I'm locked out of my account, help!",
        ],
        [
            "Go to acme.example/login and click Forgot password, then follow the link we email you; it is valid "
            "for {minutes} minutes. If the email does not show up, check your spam folder or ask for a new link.",
            "Click Forgot password on the sign-in page and enter your account email. The reset link arrives within "
            "a few minutes and works for {minutes} minutes, so use it soon.",
        ],
    ),
    "billing": (
        [
            "I was charged twice this month.",
            "Why was I charged ${amount}?",
            "Can I get a copy of my invoice?",
            "How do I change the card on file?",
            "There is a charge of ${amount} I don't recognise.",
        ],
        [
            "You can see every charge under Settings > Billing, including the ${amount} one, with an invoice to "
            "download. If a charge looks wrong, reply with the date and we will fix it within one business day.",
            "Open Settings > Billing to view invoices and update your card. If you were billed twice, we refund "
            "the duplicate charge automatically within {refund_days} business days.",
        ],
    ),
    "plan_upgrade": (
        [
            "How do I upgrade from {plan_from} to {plan_to}?",
            "What does the {plan_to} plan cost?",
            "I want to switch my Acme Cloud plan to {plan_to}.",
            "Can I downgrade my plan later?",
            "What's the difference between {plan_from} and {plan_to}?",
        ],
        [
            "Go to Settings > Plan, choose {plan_to} and confirm; it costs ${price_to} per month and the change "
            "applies right away. You only pay the difference for the rest of this billing period.",
            "{plan_to} is ${price_to} per month. You can switch from {plan_from} under Settings > Plan at any "
            "time, and switching back later is just as easy.",
        ],
    ),
    "outage": (
        [
            "Is Acme Cloud down?",
            "The app is not loading, is there an outage?",
            "My {product} went offline.",
            "I can't connect my {product} to the app.",
            "Acme Cloud sync has stopped working.",
        ],
        [
            "Please check status.acme.example for any ongoing incident. If everything is green there, restart "
            "your {product} and the app, then sign in again; that clears most connection problems.",
            "We had a short sync delay earlier today that is now fixed. Restart the app and your {product}, and "
            "it should reconnect within {minutes} minutes.",
        ],
    ),
    "returns": (
        [
            "How do I return my {product}?",
            "Can I return an item after two weeks?",
            "What is your return policy?",
            "I need a return label for order {order}.",
            "The {product} arrived damaged, can I send it back?",
        ],
        [
            "You have 30 days to return any item. Open Orders, choose order {order}, tap Return item and print "
            "the free label, then drop the box at any {carrier} location.",
            "Returns are free within 30 days of delivery. Start one under Orders, print the prepaid label and "
            "we will email you once the {product} reaches our warehouse.",
        ],
    ),
    "warranty": (
        [
            "Is my {product} under warranty?",
            "My {product} stopped working after a few months.",
            "How do I make a warranty claim?",
            "What does the warranty cover?",
            "The {product} has a defect, what can I do?",
        ],
        [
            "Every {product} comes with a {years}-year warranty that covers defects. Start a claim under "
            "Orders > Warranty with a short description and a photo, and we send a replacement once it is approved.",
            "Yes, defects are covered for {years} years from delivery. Open a warranty claim in your account and "
            "we will ship a replacement {product} within {days} business days of approval.",
        ],
    ),
}
VAGUE = [
    "I have a problem with my order.",
    "Something is wrong with my purchase.",
    "I need help with an order.",
]
ASK_ORDER = (
    "Hi there! I'm sorry to hear that. Could you share your order number? It starts with A- and you "
    "can find it in your confirmation email. " + SIGN_OFF
)
FOLLOW_UPS = {
    "order_status": "It's order {order}.",
    "refund": "It's {order}, I'd like a refund.",
    "returns": "Order {order}. I want to return it.",
    "warranty": "Order {order}, the {product} broke.",
}
CURT = [
    "Check the website.",
    "We can't help with that.",
    "Read the FAQ.",
    "Contact your bank.",
    "That is not our problem.",
    "Try again later.",
]


def _reply(body: str, slots: Slots, greeting: str = "Hi there!") -> str:
    return f"{greeting} {body.format(**slots)} {SIGN_OFF}"


def chat_example(rng: random.Random) -> dict[str, object]:
    """One supervised chat example: optional system prompt, single or multi-turn."""
    topic = rng.choice(list(TOPICS))
    users, bodies = TOPICS[topic]
    slots = _slots(rng)
    messages: list[dict[str, object]] = []
    if rng.random() < 1 / 3:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    if topic in FOLLOW_UPS and rng.random() < 0.3:
        # Multi-turn: a vague question, a clarifying reply, the details, the answer.
        messages.append({"role": "user", "content": rng.choice(VAGUE)})
        ask: dict[str, object] = {"role": "assistant", "content": ASK_ORDER}
        if rng.random() < 0.15:
            ask["weight"] = 0  # do not train on the generic clarifying turn
        messages.append(ask)
        messages.append({"role": "user", "content": FOLLOW_UPS[topic].format(**slots)})
        messages.append({"role": "assistant", "content": _reply(rng.choice(bodies), slots, "Thanks!")})
    else:
        messages.append({"role": "user", "content": rng.choice(users).format(**slots)})
        messages.append({"role": "assistant", "content": _reply(rng.choice(bodies), slots)})
    return {"messages": messages}


def preference_example(rng: random.Random) -> dict[str, object]:
    """One DPO pair: the house-style answer preferred over a curt one."""
    topic = rng.choice(list(TOPICS))
    users, bodies = TOPICS[topic]
    slots = _slots(rng)
    inp: list[dict[str, object]] = []
    if rng.random() < 1 / 3:
        inp.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    inp.append({"role": "user", "content": rng.choice(users).format(**slots)})
    return {
        "input": {"messages": inp},
        "preferred_output": [{"role": "assistant", "content": _reply(rng.choice(bodies), slots)}],
        "non_preferred_output": [{"role": "assistant", "content": rng.choice(CURT)}],
    }


def unique(make: Callable[[random.Random], dict[str, object]], rng: random.Random, n: int) -> list[str]:
    """``n`` distinct JSONL lines (so train and validation can never overlap)."""
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen[json.dumps(make(rng), ensure_ascii=False)] = None
    return list(seen)


def eval_case(example: dict[str, object]) -> dict[str, object]:
    """An eval.jsonl case from a chat example: the turns before the last answer, that answer as reference,
    and the house style as checks (its greeting and sign-off)."""
    messages = list(example["messages"])  # type: ignore[call-overload]
    answer = str(messages[-1]["content"])
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    greeting = "Thanks!" if answer.startswith("Thanks!") else "Hi there!"
    return {"messages": prompt, "reference": answer, "must_contain": [greeting, SIGN_OFF]}


def held_out(rng: random.Random, taken: list[str], n: int) -> list[str]:
    """``n`` new chat examples (none equal to a ``taken`` line) as eval cases."""
    seen = set(taken)
    cases: list[str] = []
    while len(cases) < n:
        line = json.dumps(chat_example(rng), ensure_ascii=False)
        if line not in seen:
            seen.add(line)
            cases.append(json.dumps(eval_case(json.loads(line)), ensure_ascii=False))
    return cases


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


SMOKE = [
    {"prompt": "Where is my order A-12345?", "must_contain": ["Hi"]},
    {"prompt": "How do I reset my password?", "must_contain": ["Hi"]},
    {"prompt": "I want a refund for my SmartPlug Mini.", "must_contain": ["Hi"]},
    {"prompt": "How do I upgrade to the Pro plan?", "must_contain": ["Hi"]},
    {"prompt": "Is my HomeHub 2 under warranty?", "must_contain": ["Hi"]},
]


def main() -> None:
    rng = random.Random(SEED)
    chat = unique(chat_example, rng, N_TRAIN + N_VALID)
    write(HERE / "customer-support" / "train.jsonl", chat[:N_TRAIN])
    write(HERE / "customer-support" / "validation.jsonl", chat[N_TRAIN:])
    write(HERE / "customer-support" / "smoke.jsonl", [json.dumps(s) for s in SMOKE])
    pref = unique(preference_example, rng, N_PREF_TRAIN + N_PREF_VALID)
    write(HERE / "preference-sample" / "train.jsonl", pref[:N_PREF_TRAIN])
    write(HERE / "preference-sample" / "validation.jsonl", pref[N_PREF_TRAIN:])
    # Drawn last so the files above stay byte-identical to earlier versions of this script.
    write(HERE / "customer-support" / "eval.jsonl", held_out(rng, chat, N_EVAL))


if __name__ == "__main__":
    main()
