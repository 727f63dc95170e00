"""A synthetic shop: catalogue and interaction log whose structure a good recommender can find.

What is planted, so that good recommendations are recognisable by eye and by metrics:
- 24 categories with readable names, brands, item titles and descriptions (content-based
  retrieval has real text to work with); some items belong to a related second category.
- Power-law popularity inside each category (a few best sellers, a long tail).
- Three price tiers (budget / mid-range / premium brands); each user prefers one tier, so
  collaborative filtering has signal beyond category popularity.
- Users with latent tastes concentrated on two or three categories, and a power-law activity.
- Sessions: bursts of views within one category, some clicks, add_to_cart, purchase,
  remove_from_cart, and occasional ratings days after a purchase.
- Time of day: each category has a peak hour (coffee in the morning, video games at night);
  the session's category depends on the hour. Hours are the user's local time (UTC offset 0).
- A device mix (each user has a main device; mobile is likelier at night).
- New arrivals: ~10% of items enter the catalogue during the log's time span and are never
  interacted with before their `created_ts` (cold-start items).

Everything is vectorised numpy, so 10M interactions take seconds and a few hundred MB.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from recpipe.domain.catalogue import DEVICES, TYPE_CODE, InteractionLog, ItemMeta
from recpipe.domain.events import EventType

#: 2025-01-01T00:00:00Z: a fixed default so that the same seed gives the same log.
DEFAULT_START_TS = 1_735_689_600.0
DAY_S = 86_400.0
TIERS = ("budget", "mid-range", "premium")


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    #: Local hour at which browsing this category peaks.
    peak_hour: int
    #: Brands per tier: budget, mid-range, premium.
    brands: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    blurb: str
    related: str | None = None


CATEGORIES: tuple[Category, ...] = (
    Category("Coffee & Tea", 7, (("DailyBrew", "CupCo"), ("Roastery Lane", "Kettle & Co"), ("Maison Arabica", "Kyoto Leaf")),
             ("Espresso Beans", "Ground Coffee", "Green Tea", "Earl Grey", "Cold Brew Kit", "Pour-Over Set", "Matcha Powder", "Chai Blend"),
             ("Dark Roast", "Single-Origin", "Organic", "Decaf", "Smooth", "Bold", "Fair-Trade", "Loose-Leaf"),
             "Wake up with freshly roasted coffee and fragrant teas", "Breakfast & Cereal"),
    Category("Breakfast & Cereal", 8, (("MorningMix", "OatPal"), ("Golden Field", "Sunny Bowl"), ("Alpine Granola", "Petit Matin")),
             ("Granola", "Muesli", "Porridge Oats", "Corn Flakes", "Pancake Mix", "Nut Butter", "Jam", "Honey"),
             ("Crunchy", "Wholegrain", "Honey-Roasted", "Gluten-Free", "High-Protein", "Fruity", "Classic", "Low-Sugar"),
             "Breakfast staples for a good start to the day", "Coffee & Tea"),
    Category("Running & Fitness", 6, (("FitBasics", "StrideOn"), ("PaceLab", "Motion Pro"), ("Aerion", "Vantage Athletics")),
             ("Running Shoes", "Yoga Mat", "Dumbbells", "Fitness Tracker", "Running Jacket", "Resistance Bands", "Water Bottle", "Compression Socks"),
             ("Lightweight", "Breathable", "Cushioned", "Reflective", "Adjustable", "Trail", "Marathon", "Non-Slip"),
             "Gear for runners, gym sessions and home workouts", "Cycling"),
    Category("Office Supplies", 10, (("DeskMate", "PaperPal"), ("Inkwell", "Clarity Office"), ("Atelier Nord", "Graphite & Co")),
             ("Notebook", "Gel Pens", "Desk Organiser", "Stapler", "Sticky Notes", "Planner", "Fountain Pen", "Monitor Stand"),
             ("Dotted", "Recycled", "Ergonomic", "Refillable", "Compact", "Leather-Bound", "Weekly", "Bamboo"),
             "Everything for a tidy, productive desk", "Laptops & Computers"),
    Category("Laptops & Computers", 14, (("ByteBasic", "CoreValue"), ("Nexa", "Orbital Tech"), ("Quantis", "Arclight")),
             ("Laptop", "Mechanical Keyboard", "Wireless Mouse", "USB-C Hub", "External SSD", "Webcam", "Monitor", "Laptop Sleeve"),
             ("Ultralight", "14-inch", "Gaming", "Silent", "Backlit", "4K", "Portable", "Dual-Band"),
             "Computers and accessories for work and play", "Office Supplies"),
    Category("Smartphones & Accessories", 20, (("PhoneFix", "ChargeIt"), ("Volta", "Pocketline"), ("Lumen Mobile", "Sapphire Labs")),
             ("Smartphone", "Phone Case", "Fast Charger", "Screen Protector", "Power Bank", "Car Mount", "Smartwatch", "Charging Cable"),
             ("Shockproof", "Slim", "MagSafe", "Tempered-Glass", "65W", "Wireless", "Waterproof", "Braided"),
             "Phones and the accessories that keep them going", "Home Audio & Headphones"),
    Category("Video Games", 22, (("PixelPlay", "ArcadeBox"), ("Nimbus Games", "Red Comet"), ("Obsidian Forge", "Starlight Studios")),
             ("Open-World RPG", "Racing Game", "Puzzle Adventure", "Game Controller", "Gaming Headset", "Strategy Game", "Platformer", "Co-op Shooter"),
             ("Epic", "Retro", "Multiplayer", "Story-Driven", "Deluxe Edition", "Indie", "Award-Winning", "Pro"),
             "Games and gaming gear for late-night sessions", "Science Fiction Books"),
    Category("Board Games & Puzzles", 19, (("FamilyFun", "DiceCo"), ("Meeple House", "Tabletop Tales"), ("Grand Strategy", "Maison du Jeu")),
             ("Board Game", "Jigsaw Puzzle", "Card Game", "Chess Set", "Party Game", "Escape Room Kit", "Dice Set", "Cooperative Game"),
             ("1000-Piece", "Family", "Strategy", "Two-Player", "Travel", "Wooden", "Deluxe", "Classic"),
             "Games for family evenings and game nights", "Video Games"),
    Category("Science Fiction Books", 22, (("Paperback Galaxy", "Pulp Stars"), ("Orbit Press", "Nova Books"), ("Collector's Nebula", "Aurora Editions")),
             ("Space Opera", "Cyberpunk Novel", "Time-Travel Thriller", "First Contact Novel", "Dystopian Saga", "Robot Anthology", "Mars Colony Novel", "Galactic Trilogy"),
             ("Hugo-Winning", "Bestselling", "Illustrated", "Hardcover", "Debut", "Annotated", "Complete", "Signed"),
             "Stories of starships, strange worlds and possible futures", "Video Games"),
    Category("Crime & Thriller Books", 21, (("Pocket Mysteries", "Dime Noir"), ("Blackwood Press", "Harbour Books"), ("Midnight Editions", "Scarlet Quill")),
             ("Detective Novel", "Psychological Thriller", "Spy Novel", "Courtroom Drama", "True Crime", "Heist Thriller", "Cold Case Mystery", "Nordic Noir"),
             ("Gripping", "Bestselling", "Twisty", "Award-Winning", "Hardcover", "Debut", "Dark", "Classic"),
             "Page-turners with detectives, spies and twists", "Science Fiction Books"),
    Category("Cookbooks & Kitchen", 17, (("HomeChef", "PanPal"), ("Copper & Thyme", "Kitchen Lab"), ("Le Chef", "Cast & Iron")),
             ("Chef's Knife", "Cast Iron Skillet", "Cookbook", "Stand Mixer", "Cutting Board", "Dutch Oven", "Spice Rack", "Baking Tray"),
             ("Italian", "Vegetarian", "Non-Stick", "Japanese", "Quick Weeknight", "Enamelled", "Stainless", "Artisan"),
             "Cookbooks and kitchen tools for home cooks", "Coffee & Tea"),
    Category("Camping & Hiking", 12, (("TrailBasics", "CampLite"), ("Ridgeline", "Pinecrest"), ("Summit Forge", "Nordpeak")),
             ("Tent", "Sleeping Bag", "Hiking Boots", "Backpack", "Headlamp", "Camping Stove", "Trekking Poles", "Rain Shell"),
             ("Ultralight", "Waterproof", "4-Season", "Insulated", "Packable", "Rugged", "2-Person", "Weatherproof"),
             "Gear for trails, mountains and nights under the stars", "Cycling"),
    Category("Cycling", 9, (("PedalPal", "SpokeCo"), ("Velocity", "Chainline"), ("Cortina Cycles", "Aeroform")),
             ("Road Bike", "Bike Helmet", "Bike Lights", "Cycling Jersey", "Bike Lock", "Saddle Bag", "Mini Pump", "Cycling Gloves"),
             ("Carbon", "Aero", "Rechargeable", "Padded", "Gravel", "Commuter", "Folding", "Hi-Vis"),
             "Bikes and kit for commuting, training and touring", "Running & Fitness"),
    Category("Home Audio & Headphones", 21, (("SoundBasic", "BassBox"), ("Resonant", "Echo Lane"), ("Aurum Acoustics", "Halcyon Audio")),
             ("Headphones", "Bluetooth Speaker", "Soundbar", "Earbuds", "Turntable", "Studio Monitors", "Smart Speaker", "DAC Amplifier"),
             ("Noise-Cancelling", "Wireless", "Hi-Fi", "Portable", "Over-Ear", "Bass-Boosted", "Waterproof", "Vintage"),
             "Sound for the living room and on the go", "Smartphones & Accessories"),
    Category("Baby & Toddler", 3, (("TinySteps", "BabyBasics"), ("Little Nest", "Cuddle Co"), ("Petit Bijou", "Nordic Baby")),
             ("Baby Monitor", "Nappies", "Night Light", "Baby Bottles", "Sleeping Bag", "Teething Toy", "Pram Organiser", "Baby Carrier"),
             ("Soft", "Organic", "Anti-Colic", "Ergonomic", "Glow-in-the-Dark", "Hypoallergenic", "Night-Time", "Gentle"),
             "Everything for babies, toddlers and tired parents", None),
    Category("Gardening", 10, (("GreenThumb", "SeedSaver"), ("Bloom & Root", "Garden Works"), ("Hortus", "Kew Craft")),
             ("Seed Collection", "Pruning Shears", "Garden Hose", "Raised Bed", "Compost Bin", "Watering Can", "Potting Soil", "Gardening Gloves"),
             ("Heirloom", "Heavy-Duty", "Expandable", "Cedar", "Organic", "Galvanised", "Peat-Free", "Thorn-Proof"),
             "Tools, seeds and soil for gardens of any size", "Tools & DIY"),
    Category("Pet Supplies", 18, (("PawPal", "HappyTail"), ("Furry Friends", "Woof & Purr"), ("Maison Chien", "Regal Paws")),
             ("Dog Food", "Cat Litter", "Chew Toy", "Pet Bed", "Dog Lead", "Scratching Post", "Cat Treats", "Pet Fountain"),
             ("Grain-Free", "Orthopaedic", "Durable", "Clumping", "Reflective", "Salmon", "Calming", "Self-Cleaning"),
             "Food, toys and comfort for cats and dogs", None),
    Category("Skin Care", 22, (("PureDaily", "SimplySkin"), ("Glow Lab", "Botanica"), ("Maison Lumière", "Seoul Dew")),
             ("Night Cream", "Face Serum", "Sunscreen", "Cleanser", "Sheet Mask", "Eye Cream", "Toner", "Lip Balm"),
             ("Hydrating", "Vitamin C", "Retinol", "Fragrance-Free", "SPF 50", "Soothing", "Hyaluronic", "Overnight"),
             "Evening routines and skin care for every skin type", None),
    Category("Men's Fashion", 13, (("BasicThread", "UrbanFit"), ("Harbour Supply", "Oxford Row"), ("Savile & Stone", "Nordhaus")),
             ("Chinos", "Oxford Shirt", "Denim Jacket", "Wool Sweater", "Leather Belt", "Sneakers", "Overcoat", "Polo Shirt"),
             ("Slim-Fit", "Organic Cotton", "Merino", "Relaxed", "Tailored", "Stretch", "Vintage", "Waterproof"),
             "Wardrobe staples and statement pieces for men", None),
    Category("Women's Fashion", 13, (("EverydayWear", "StyleBasics"), ("Linen & Lace", "Avenue Nine"), ("Maison Rose", "Atelier Vale")),
             ("Summer Dress", "Trench Coat", "Knit Cardigan", "Ankle Boots", "Silk Scarf", "High-Waist Jeans", "Blouse", "Tote Bag"),
             ("Floral", "Cashmere", "Wrap", "Linen", "Leather", "Oversized", "Pleated", "Classic"),
             "Dresses, coats and accessories for women", None),
    Category("Home Decor", 15, (("CozyHome", "NestBasics"), ("Hearth & Linen", "Oak Lane"), ("Maison Blanche", "Nordic Loft")),
             ("Throw Blanket", "Scented Candle", "Table Lamp", "Wall Art", "Cushion Cover", "Ceramic Vase", "Area Rug", "Mirror"),
             ("Boho", "Minimalist", "Velvet", "Handmade", "Scandinavian", "Rattan", "Marble", "Linen"),
             "Decor and soft furnishings that make a house a home", "Gardening"),
    Category("Tools & DIY", 11, (("FixRight", "ToolBox Co"), ("Ironclad", "Workbench"), ("Precision Forge", "Meridian Tools")),
             ("Cordless Drill", "Screwdriver Set", "Tape Measure", "Spirit Level", "Tool Chest", "Circular Saw", "Socket Set", "Stud Finder"),
             ("18V", "Brushless", "Magnetic", "Professional", "Compact", "Laser", "Impact-Rated", "Heavy-Duty"),
             "Tools for repairs, renovations and weekend projects", "Gardening"),
    Category("Snacks & Drinks", 23, (("SnackStack", "FizzPop"), ("Crunch Theory", "Nightowl Snacks"), ("Chocolatier Belge", "Craft Soda Co")),
             ("Potato Crisps", "Dark Chocolate", "Popcorn", "Energy Drink", "Trail Mix", "Sparkling Water", "Gummy Bears", "Protein Bar"),
             ("Sea-Salt", "Spicy", "Caramel", "Sugar-Free", "Family-Size", "Smoked", "Sour", "Salted"),
             "Late-night snacks and drinks", "Video Games"),
    Category("Musical Instruments", 20, (("TuneStart", "StrumCo"), ("Harmonia", "Bluebird Music"), ("Sonata Works", "Vintage Tone")),
             ("Acoustic Guitar", "Digital Piano", "Ukulele", "Guitar Strings", "Drum Pad", "Microphone", "Audio Interface", "Violin"),
             ("Beginner", "Solid-Wood", "Weighted-Key", "Concert", "USB", "Electric", "Studio", "Left-Handed"),
             "Instruments and recording gear for musicians", "Home Audio & Headphones"),
)  # fmt: skip

CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
_VARIANTS = (
    "Black",
    "White",
    "Blue",
    "Green",
    "Red",
    "Grey",
    "Sand",
    "Navy",
    "Olive",
    "Rose",
    "Slate",
    "Amber",
)

#: Event mix per touched item: view always, then click, cart, purchase/remove, rating.
P_CLICK = 0.40
P_CART_GIVEN_CLICK = 0.18
P_PURCHASE_GIVEN_CART = 0.55
P_REMOVE_GIVEN_NO_PURCHASE = 0.35
P_RATING_GIVEN_PURCHASE = 0.25
P_TIER_LOYAL = 0.70
P_DRIFT = 0.08
MEAN_TOUCHES_PER_SESSION = 4.0
_BATCH_ROWS = 2_000_000
_EVENTS_PER_TOUCH = (
    1
    + P_CLICK
    + P_CLICK * P_CART_GIVEN_CLICK * (1 + P_PURCHASE_GIVEN_CART * (1 + P_RATING_GIVEN_PURCHASE))
    + P_CLICK * P_CART_GIVEN_CLICK * (1 - P_PURCHASE_GIVEN_CART) * P_REMOVE_GIVEN_NO_PURCHASE
)


def hour_affinity() -> npt.NDArray[np.float64]:
    """(n_categories, 24) multiplier of a category's appeal at each local hour (about 3.5x peak/trough)."""
    hours = np.arange(24, dtype=np.float64)
    peaks = np.array([c.peak_hour for c in CATEGORIES], dtype=np.float64)[:, None]
    return 0.35 + np.exp(2.0 * (np.cos(2 * math.pi * (hours[None, :] - peaks) / 24.0) - 1.0))


def _hour_of_day_weights() -> npt.NDArray[np.float64]:
    """When people shop: an evening peak, a smaller morning one, quiet small hours."""
    h = np.arange(24, dtype=np.float64)
    w = (
        0.08
        + np.exp(1.5 * (np.cos(2 * math.pi * (h - 20.5) / 24) - 1))
        + 0.6 * np.exp(3.0 * (np.cos(2 * math.pi * (h - 8) / 24) - 1))
    )
    return w / w.sum()


def _titles(cat: Category, n: int, tiers: npt.NDArray[np.int8], rng: np.random.Generator) -> list[str]:
    """Unique-within-category readable titles: '<brand> <adjective> <noun>[ - <variant>][ Mk n]'."""
    out: list[str] = []
    repeats: dict[str, int] = {}
    n_adj, n_noun = len(cat.adjectives), len(cat.nouns)
    picks = rng.integers(0, n_adj * n_noun, n)
    brand_pick = rng.integers(0, 2, n)
    for i in range(n):
        adj, noun = divmod(int(picks[i]), n_noun)
        base = f"{cat.brands[int(tiers[i])][int(brand_pick[i])]} {cat.adjectives[adj]} {cat.nouns[noun]}"
        # Colour variants, then editions, keep titles unique however large the catalogue.
        k = repeats.get(base, 0)
        repeats[base] = k + 1
        if k == 0:
            out.append(base)
            continue
        variant = _VARIANTS[(k - 1) % len(_VARIANTS)]
        edition = (k - 1) // len(_VARIANTS)
        out.append(f"{base} - {variant}" + (f" Mk {edition + 1}" if edition else ""))
    return out


def _catalogue(
    n_items: int, rng: np.random.Generator, start_ts: float, span_s: float
) -> tuple[list[ItemMeta], npt.NDArray[np.int16], npt.NDArray[np.int8], npt.NDArray[np.float64]]:
    n_cat = len(CATEGORIES)
    # Category sizes vary (some aisles are bigger); every category gets at least one item.
    shares = rng.dirichlet(np.full(n_cat, 4.0))
    sizes = np.maximum(1, np.floor(shares * n_items).astype(np.int64)) if n_items >= n_cat else None
    if sizes is None:
        cats = np.arange(n_items, dtype=np.int16) % n_cat
    else:
        while sizes.sum() > n_items:
            sizes[np.argmax(sizes)] -= 1
        sizes[np.argmin(sizes)] += n_items - sizes.sum()
        cats = np.repeat(np.arange(n_cat, dtype=np.int16), sizes)
    rng.shuffle(cats)
    tiers = rng.choice(3, size=n_items, p=[0.4, 0.4, 0.2]).astype(np.int8)
    created = start_ts - rng.uniform(30, 720, n_items) * DAY_S
    new = rng.random(n_items) < 0.10
    created[new] = start_ts + rng.uniform(0.0, span_s, int(new.sum()))
    second = rng.random(n_items) < 0.15
    name_to_code = {c.name: i for i, c in enumerate(CATEGORIES)}

    titles: list[str] = [""] * n_items
    for c, cat in enumerate(CATEGORIES):
        idx = np.flatnonzero(cats == c)
        for i, title in zip(idx, _titles(cat, len(idx), tiers[idx], rng), strict=True):
            titles[int(i)] = title
    width = max(6, len(str(n_items - 1)))
    items: list[ItemMeta] = []
    for i in range(n_items):
        cat = CATEGORIES[int(cats[i])]
        names: tuple[str, ...] = (cat.name,)
        if second[i] and cat.related is not None and cat.related in name_to_code:
            names = (cat.name, cat.related)
        tier = TIERS[int(tiers[i])]
        text = f"{titles[i]}. A {tier} pick in {cat.name.lower()}. {cat.blurb}."
        items.append(
            ItemMeta(
                item_id=f"i{i:0{width}d}",
                title=titles[i],
                categories=names,
                text=text,
                created_ts=float(created[i]),
            )
        )
    return items, cats, tiers, created


def _grouped_cumsum(
    values: npt.NDArray[np.float64], starts: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """Cumulative sum restarting at every True in `starts` (values[0] must start a group)."""
    total = np.cumsum(values)
    group_id = np.cumsum(starts) - 1
    offsets = (total - values)[starts]
    return total - offsets[group_id]


def _sample_by_group(
    groups: npt.NDArray[np.int64],
    cum_weights: list[npt.NDArray[np.float64]],
    members: list[npt.NDArray[np.int32]],
    rng: np.random.Generator,
) -> npt.NDArray[np.int32]:
    """For each row, draw one member of its group with the group's (cumulative) weights."""
    out = np.empty(len(groups), dtype=np.int32)
    order = np.argsort(groups, kind="stable")
    counts = np.bincount(groups, minlength=len(members))
    bounds = np.concatenate(([0], np.cumsum(counts)))
    for g, cw in enumerate(cum_weights):
        lo, hi = bounds[g], bounds[g + 1]
        if lo == hi:
            continue
        r = rng.random(hi - lo) * cw[-1]
        out[order[lo:hi]] = members[g][np.minimum(np.searchsorted(cw, r, side="right"), len(cw) - 1)]
    return out


def generate(  # noqa: PLR0917 - the documented positional signature other modules call
    n_users: int,
    n_items: int,
    n_interactions: int,
    seed: int = 0,
    start_ts: float = DEFAULT_START_TS,
    span_days: float = 28.0,
) -> tuple[InteractionLog, list[ItemMeta]]:
    """A log of exactly `n_interactions` rows (sorted by time) over `span_days` from `start_ts`,
    and the `n_items` catalogue. User ids are `u0000000`.., item ids `i000000`..; users with no
    interactions keep their code (cold-start users exist, as in real traffic)."""
    if n_users < 1 or n_items < 1 or n_interactions < 0:
        raise ValueError("need n_users >= 1, n_items >= 1 and n_interactions >= 0")
    if span_days <= 0:
        raise ValueError("span_days must be positive")
    rng = np.random.default_rng(seed)
    span_s = span_days * DAY_S
    n_cat = len(CATEGORIES)
    items, item_cat, item_tier, created = _catalogue(n_items, rng, start_ts, span_s)

    # Popularity: Zipf inside each category (random rank order), items grouped by (category, tier).
    popularity = np.empty(n_items, dtype=np.float64)
    for c in range(n_cat):
        idx = np.flatnonzero(item_cat == c)
        popularity[idx] = 1.0 / (rng.permutation(len(idx)) + 1.0) ** 1.05
    n_groups = n_cat * 3
    item_group = item_cat.astype(np.int64) * 3 + item_tier
    cat_members = [np.flatnonzero(item_cat == c).astype(np.int32) for c in range(n_cat)]
    group_members = [np.flatnonzero(item_group == g).astype(np.int32) for g in range(n_groups)]
    # A tiny catalogue may lack a tier in some category: loyal users then take any tier.
    group_members = [m if len(m) else cat_members[g // 3] for g, m in enumerate(group_members)]
    group_cw = [np.cumsum(popularity[m]) for m in group_members]
    cat_cw = [np.cumsum(popularity[m]) for m in cat_members]
    # Items that exist before the log starts: the replacement pool for touches of unreleased items.
    old_members = [m[created[m] <= start_ts] for m in cat_members]
    old_members = [o if len(o) else m for o, m in zip(old_members, cat_members, strict=True)]

    # Users: concentrated tastes, a preferred tier, a main device, power-law activity.
    cat_popularity = rng.dirichlet(np.full(n_cat, 3.0))
    tastes = 0.9 * rng.dirichlet(np.full(n_cat, 0.12), size=n_users) + 0.1 * cat_popularity
    tastes = tastes.astype(np.float32)
    user_tier = rng.choice(3, size=n_users, p=[0.4, 0.4, 0.2]).astype(np.int8)
    main_device = rng.choice(4, size=n_users, p=[0.47, 0.40, 0.10, 0.03]).astype(np.int8)
    activity = rng.lognormal(0.0, 1.1, n_users)
    activity /= activity.sum()
    hour_w = _hour_of_day_weights()
    cat_hour = hour_affinity().astype(np.float32)
    width = max(7, len(str(n_users - 1)))

    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("users", "items", "ts", "types", "values", "devices")
    }
    produced = 0
    while produced < n_interactions:
        # Batches of ~2M rows keep the temporaries small whatever the requested size.
        need = min(n_interactions - produced, _BATCH_ROWS)
        n_sessions = max(1, math.ceil(need * 1.05 / (_EVENTS_PER_TOUCH * MEAN_TOUCHES_PER_SESSION)))
        sess = _sessions(
            n_sessions,
            rng=rng,
            activity=activity,
            tastes=tastes,
            cat_hour=cat_hour,
            hour_w=hour_w,
            start_ts=start_ts,
            span_s=span_s,
        )
        s_user, s_cat, s_start, s_hour = sess
        # Touches: 1 + geometric extra items per session, seconds apart.
        lengths = 1 + rng.geometric(1.0 / MEAN_TOUCHES_PER_SESSION, n_sessions) - 1
        lengths = np.maximum(lengths, 1)
        t_sess = np.repeat(np.arange(n_sessions, dtype=np.int64), lengths)
        starts = np.zeros(len(t_sess), dtype=bool)
        starts[np.concatenate(([0], np.cumsum(lengths)[:-1]))] = True
        gaps = rng.exponential(45.0, len(t_sess))
        gaps[starts] = 0.0
        t_ts = s_start[t_sess] + _grouped_cumsum(gaps, starts)
        t_user = s_user[t_sess]
        t_cat = s_cat[t_sess].astype(np.int64)
        drift = rng.random(len(t_sess)) < P_DRIFT
        t_cat[drift] = rng.integers(0, n_cat, int(drift.sum()))
        loyal = rng.random(len(t_sess)) < P_TIER_LOYAL
        t_item = np.empty(len(t_sess), dtype=np.int32)
        t_item[loyal] = _sample_by_group(
            t_cat[loyal] * 3 + user_tier[t_user[loyal]], group_cw, group_members, rng
        )
        t_item[~loyal] = _sample_by_group(t_cat[~loyal], cat_cw, cat_members, rng)
        _fix_unreleased(
            t_item=t_item, t_ts=t_ts, item_cat=item_cat, created=created, old_members=old_members, rng=rng
        )
        # Device per session: mostly the user's main device; otherwise mobile, likelier at night.
        s_dev = main_device[s_user].copy()
        switch = rng.random(n_sessions) < 0.2
        night = (s_hour >= 21) | (s_hour < 6)
        s_dev[switch] = np.where(
            night[switch], DEVICES.index("mobile"), rng.integers(0, 5, int(switch.sum()))
        )
        t_dev = s_dev[t_sess]

        ev = _expand(t_user=t_user, t_item=t_item, t_ts=t_ts, t_dev=t_dev, t_sess=t_sess, rng=rng)
        take = min(len(ev["users"]), need)
        for k, parts in cols.items():
            parts.append(ev[k][:take])
        produced += take

    cat = {k: (np.concatenate(v) if v else np.empty(0)) for k, v in cols.items()}
    log = InteractionLog(
        users=cat["users"].astype(np.int32),
        items=cat["items"].astype(np.int32),
        # Late ratings are clipped to the end of the span (never in the caller's future).
        ts=np.minimum(cat["ts"].astype(np.float64), start_ts + span_s),
        types=cat["types"].astype(np.uint8),
        values=cat["values"].astype(np.float32),
        user_vocab=[f"u{i:0{width}d}" for i in range(n_users)],
        item_vocab=[m.item_id for m in items],
        devices=cat["devices"].astype(np.int8),
    )
    return log.sorted_by_time(), items


def _sessions(
    n: int,
    *,
    rng: np.random.Generator,
    activity: npt.NDArray[np.float64],
    tastes: npt.NDArray[np.float32],
    cat_hour: npt.NDArray[np.float32],
    hour_w: npt.NDArray[np.float64],
    start_ts: float,
    span_s: float,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int16], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Who browses, when, and which category: taste x time-of-day appeal, sampled in chunks."""
    users = rng.choice(len(activity), size=n, p=activity)
    days = rng.integers(0, max(1, math.ceil(span_s / DAY_S)), n)
    hours = rng.choice(24, size=n, p=hour_w)
    start = days * DAY_S + hours * 3600.0 + rng.uniform(0, 3600.0, n)
    # Keep inside the span (the last day may be partial) and leave room for the session itself.
    start = start_ts + np.minimum(start, max(span_s - 3600.0, 0.0))
    cats = np.empty(n, dtype=np.int16)
    chunk = 200_000  # bounds the (chunk x categories) matrix to a few MB
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        p = tastes[users[lo:hi]] * cat_hour[:, hours[lo:hi]].T
        cum = np.cumsum(p, axis=1)
        r = rng.random(hi - lo, dtype=np.float32) * cum[:, -1]
        cats[lo:hi] = np.minimum((cum < r[:, None]).sum(axis=1), len(CATEGORIES) - 1)
    return users, cats, start, hours


def _fix_unreleased(
    *,
    t_item: npt.NDArray[np.int32],
    t_ts: npt.NDArray[np.float64],
    item_cat: npt.NDArray[np.int16],
    created: npt.NDArray[np.float64],
    old_members: list[npt.NDArray[np.int32]],
    rng: np.random.Generator,
) -> None:
    """Nobody touches an item before it exists: swap for an established item of the same category."""
    bad = np.flatnonzero(t_ts < created[t_item])
    if len(bad) == 0:
        return
    cats = item_cat[t_item[bad]]
    for c in np.unique(cats):
        rows = bad[cats == c]
        pool = old_members[int(c)]
        t_item[rows] = pool[rng.integers(0, len(pool), len(rows))]
    # An item created mid-log may still be younger than a pool item's touch: pool items are
    # all pre-log, so one pass suffices.


def _expand(
    *,
    t_user: npt.NDArray[np.int64],
    t_item: npt.NDArray[np.int32],
    t_ts: npt.NDArray[np.float64],
    t_dev: npt.NDArray[np.int8],
    t_sess: npt.NDArray[np.int64],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Each touched item -> view, maybe click -> add_to_cart -> purchase (-> rating) or remove."""
    n = len(t_item)
    click = rng.random(n) < P_CLICK
    cart = click & (rng.random(n) < P_CART_GIVEN_CLICK)
    purchase = cart & (rng.random(n) < P_PURCHASE_GIVEN_CART)
    remove = cart & ~purchase & (rng.random(n) < P_REMOVE_GIVEN_NO_PURCHASE)
    rating = purchase & (rng.random(n) < P_RATING_GIVEN_PURCHASE)
    parts: list[tuple[npt.NDArray[np.bool_], EventType, npt.NDArray[np.float64]]] = [
        (np.ones(n, dtype=bool), EventType.VIEW, np.zeros(n)),
        (click, EventType.CLICK, rng.uniform(2, 15, n)),
        (cart, EventType.ADD_TO_CART, rng.uniform(16, 40, n)),
        (purchase, EventType.PURCHASE, rng.uniform(60, 600, n)),
        (remove, EventType.REMOVE_FROM_CART, rng.uniform(60, 900, n)),
        (rating, EventType.RATING, rng.uniform(1, 7, n) * DAY_S),
    ]
    out: dict[str, list[np.ndarray]] = {
        k: [] for k in ("users", "items", "ts", "types", "values", "devices", "sess")
    }
    for mask, etype, delay in parts:
        idx = np.flatnonzero(mask)
        out["users"].append(t_user[idx].astype(np.int32))
        out["items"].append(t_item[idx])
        out["ts"].append(t_ts[idx] + delay[idx])
        out["types"].append(np.full(len(idx), TYPE_CODE[etype], dtype=np.uint8))
        if etype is EventType.RATING:
            values = rng.choice(
                np.array([3.0, 3.5, 4.0, 4.5, 5.0], np.float32), len(idx), p=[0.1, 0.15, 0.3, 0.2, 0.25]
            )
        else:
            values = np.full(len(idx), np.nan, dtype=np.float32)
        out["values"].append(values)
        out["devices"].append(t_dev[idx])
        out["sess"].append(t_sess[idx])
    merged = {k: np.concatenate(v) for k, v in out.items()}
    # Session-major order so that truncating to the requested size drops whole trailing sessions.
    order = np.lexsort((merged["ts"], merged["sess"]))
    return {k: v[order] for k, v in merged.items() if k != "sess"}


def synthetic_loader(source: Mapping[str, Any]) -> tuple[InteractionLog, list[ItemMeta], dict[str, Any]]:
    """The retrain workflow's `{"kind": "synthetic", ...}` source (local stack, benchmarks, tests)."""
    log, items = generate(
        n_users=int(source.get("n_users", 2000)),
        n_items=int(source.get("n_items", 1000)),
        n_interactions=int(source.get("n_interactions", 100_000)),
        seed=int(source.get("seed", 0)),
    )
    return log, items, {"generated": len(log), "error_count": 0}


#: Data sources the dev tooling adds to the runtime's (`build_deps(extra_loaders=...)`).
DEV_LOADERS = {"synthetic": synthetic_loader}


#: MovieLens stars for a (user, item) pair by its strongest event (a rating keeps its value;
#: a pair with only removals from the cart is no interest and is dropped).
MOVIELENS_STARS: dict[EventType, float] = {
    EventType.VIEW: 2.0,
    EventType.CLICK: 3.0,
    EventType.ADD_TO_CART: 3.5,
    EventType.REMOVE_FROM_CART: 0.0,
    EventType.PURCHASE: 4.5,
    EventType.RATING: 0.0,
}


def write_movielens(
    log: InteractionLog, items: list[ItemMeta], directory: Path, *, min_ratings: int = 5
) -> int:
    """Write the shop as a MovieLens-format data set (ratings.csv, movies.csv) in `directory`:
    one rating per (user, item) pair at its first interaction, stars by the pair's strongest
    event (MOVIELENS_STARS), users with at least `min_ratings` pairs, categories as genres. A
    second data set with a different structure from MovieLens's, for `recpipe evaluate`'s
    MovieLens-format path. Returns the number of rating rows."""
    from recpipe.domain.catalogue import EVENT_TYPE_CODES

    stars = np.asarray([MOVIELENS_STARS[t] for t in EVENT_TYPE_CODES], np.float64)
    r = stars[log.types]
    rated = log.types == TYPE_CODE[EventType.RATING]
    r[rated] = np.nan_to_num(log.values[rated])
    keep = np.flatnonzero(r > 0)
    n_items = max(len(log.item_vocab), 1)
    cell = log.users[keep].astype(np.int64) * n_items + log.items[keep]
    cells, inv = np.unique(cell, return_inverse=True)
    best = np.zeros(len(cells))
    np.maximum.at(best, inv, r[keep])
    first = np.full(len(cells), np.inf)
    np.minimum.at(first, inv, log.ts[keep])
    users, item_idx = cells // n_items, cells % n_items
    enough = np.bincount(users, minlength=len(log.user_vocab)) >= min_ratings
    order = np.lexsort((first, users))
    order = order[enough[users[order]]]
    # MovieLens ids are integers: the shop's u0000042 / i000042 become 43
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "ratings.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "movieId", "rating", "timestamp"])
        for j in order.tolist():
            w.writerow(
                [
                    int(log.user_vocab[users[j]][1:]) + 1,
                    int(log.item_vocab[item_idx[j]][1:]) + 1,
                    round(float(best[j]) * 2) / 2,
                    int(first[j]),
                ]
            )
    with (directory / "movies.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["movieId", "title", "genres"])
        for m in items:
            w.writerow([int(m.item_id[1:]) + 1, m.title, "|".join(m.categories) or "(no genres listed)"])
    return len(order)
