"""A small deterministic synthetic dataset in LC-Rec format: the demo's embedded default.

The demo and the fast tests need data that is (1) tiny, (2) byte-for-byte reproducible, and
(3) learnable, so that a sequence model visibly beats popularity on it. Items get readable
titles from per-category word lists (so text embeddings cluster them by category), users a
Dirichlet taste over categories, items a Zipf-like popularity, and sequences a first-order
structure: the next item tends to share the previous one's category (often its brand) or
comes from that category's complementary category.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

NAME = "Synthetic"
MIN_SEQ_LEN = 5
MAX_SEQ_LEN = 20
# Transition probabilities from the previous item: same category (same brand half of the
# time), the complementary category, or a fresh draw from the user's taste.
P_SAME_CATEGORY = 0.5
P_SAME_BRAND = 0.5
P_COMPLEMENT = 0.2
ZIPF_EXPONENT = 0.8
TASTE_CONCENTRATION = 0.3


@dataclass(frozen=True)
class _Category:
    name: str
    department: str
    brands: tuple[str, ...]
    adjectives: tuple[str, ...]
    features: tuple[str, ...]
    nouns: tuple[str, ...]
    sizes: tuple[str, ...]
    use: str


# fmt: off
_CATEGORIES: tuple[_Category, ...] = (
    _Category(
        "Skincare", "Beauty", ("Lumiere", "Dermaviva", "PureLeaf", "Aquafresh Labs"),
        ("Hydrating", "Soothing", "Brightening", "Firming", "Gentle", "Renewing", "Clarifying", "Nourishing"),
        ("Rose", "Aloe", "Vitamin C", "Hyaluronic", "Green Tea", "Retinol", "Shea", "Charcoal"),
        ("Face Serum", "Night Cream", "Toner", "Cleanser", "Eye Gel", "Face Mask"),
        ("30ml", "50ml", "100ml", "200ml"), "daily skin care",
    ),
    _Category(
        "Hair Care", "Beauty", ("Silkora", "Mane Theory", "Botanix", "Curlwell"),
        ("Repairing", "Volumizing", "Smoothing", "Color-Safe", "Strengthening", "Clarifying", "Moisture",
         "Daily"),
        ("Argan", "Coconut", "Keratin", "Biotin", "Tea Tree", "Jojoba", "Honey", "Mint"),
        ("Shampoo", "Conditioner", "Hair Oil", "Hair Mask", "Leave-In Spray", "Styling Cream"),
        ("250ml", "400ml", "500ml", "1L"), "healthy hair",
    ),
    _Category(
        "Makeup", "Beauty", ("Velvet Muse", "Glowry", "Chroma", "Petal & Ink"),
        ("Matte", "Satin", "Long-Wear", "Shimmer", "Sheer", "Waterproof", "Creamy", "Radiant"),
        ("Nude", "Berry", "Coral", "Bronze", "Rose Gold", "Plum", "Ivory", "Cocoa"),
        ("Lipstick", "Eyeshadow Palette", "Foundation", "Mascara", "Blush", "Eyeliner"),
        ("Mini", "Standard", "Duo", "Trio"), "everyday makeup",
    ),
    _Category(
        "Fragrance", "Beauty", ("Maison Aube", "Scentral", "Noctis", "Floralie"),
        ("Fresh", "Warm", "Woody", "Floral", "Citrus", "Oriental", "Spicy", "Powdery"),
        ("Jasmine", "Sandalwood", "Bergamot", "Vanilla", "Amber", "Lavender", "Oud", "Peony"),
        ("Eau de Parfum", "Eau de Toilette", "Body Mist", "Perfume Oil", "Solid Perfume", "Travel Spray"),
        ("10ml", "30ml", "50ml", "100ml"), "a signature scent",
    ),
    _Category(
        "Nail Care", "Beauty", ("Lacquerie", "Polished", "NailNest", "Gloss & Co"),
        ("Quick-Dry", "Gel-Effect", "Chip-Resistant", "Glitter", "Pastel", "Neon", "Classic",
         "Strengthening"),
        ("Red", "Pink", "Teal", "Black", "Silver", "Lilac", "Mint", "Nude"),
        ("Nail Polish", "Top Coat", "Base Coat", "Cuticle Oil", "Nail File Set", "Polish Remover"),
        ("5ml", "10ml", "15ml", "Set of 3"), "salon-style nails",
    ),
    _Category(
        "Bath & Body", "Beauty", ("Soapwell", "Bloom Bath", "Oceanic", "Herbarium"),
        ("Creamy", "Foaming", "Exfoliating", "Relaxing", "Energizing", "Softening", "Calming", "Refreshing"),
        ("Oatmeal", "Lavender", "Citrus", "Sea Salt", "Almond", "Eucalyptus", "Cocoa Butter", "Cucumber"),
        ("Body Wash", "Body Lotion", "Bath Bomb", "Body Scrub", "Hand Cream", "Bar Soap"),
        ("100g", "250ml", "400ml", "Pack of 4"), "a relaxing bath",
    ),
    _Category(
        "Men's Grooming", "Beauty", ("Ironwood", "Barber & Blade", "Northman", "Gentry"),
        ("Sensitive", "Cooling", "Precision", "Classic", "Matte", "Hydrating", "Sport", "Charcoal"),
        ("Cedar", "Menthol", "Sandalwood", "Bay Rum", "Vetiver", "Citrus", "Black Pepper", "Tobacco"),
        ("Beard Oil", "Shaving Cream", "Aftershave Balm", "Hair Pomade", "Face Wash", "Razor Set"),
        ("30ml", "75ml", "150ml", "Kit"), "a sharp look",
    ),
    _Category(
        "Tools & Accessories", "Beauty", ("ProStyle", "Glamkit", "SilkTouch", "Brushworks"),
        ("Professional", "Compact", "Travel", "Ionic", "Ceramic", "Soft-Bristle", "Ergonomic", "Cordless"),
        ("Bamboo", "Rose Quartz", "Titanium", "Vegan", "Jade", "Silicone", "Gold", "Matte Black"),
        ("Makeup Brush Set", "Hair Dryer", "Flat Iron", "Facial Roller", "Makeup Sponge", "Mirror"),
        ("Small", "Medium", "Large", "Set"), "beauty routines",
    ),
    _Category(
        "Office Supplies", "Office", ("Paperline", "Deskmate", "Inkwell", "Stacko"),
        ("Premium", "Recycled", "Heavy-Duty", "Colorful", "Compact", "Classic", "Refillable", "Ergonomic"),
        ("Blue", "Black", "Kraft", "Pastel", "Neon", "Gray", "Clear", "Red"),
        ("Notebook", "Gel Pen Pack", "Stapler", "File Folder", "Sticky Notes", "Desk Organizer"),
        ("A5", "A4", "Pack of 12", "Pack of 50"), "an organized desk",
    ),
    _Category(
        "Kitchen", "Home", ("Cookwise", "Hearth & Co", "Ferro", "Olivewood"),
        ("Non-Stick", "Stainless", "Cast Iron", "Silicone", "Bamboo", "Enameled", "Copper", "Glass"),
        ("Red", "Charcoal", "Sage", "Cream", "Navy", "Terracotta", "White", "Black"),
        ("Frying Pan", "Saucepan", "Spatula Set", "Cutting Board", "Mixing Bowl", "Chef Knife"),
        ("20cm", "24cm", "28cm", "Set of 3"), "home cooking",
    ),
)
# fmt: on
MAX_CATEGORIES = len(_CATEGORIES)


def _validate(num_users: int, num_items: int, num_categories: int) -> None:
    if num_users < 1:
        raise ValueError(f"num_users must be >= 1, got {num_users}")
    if not 1 <= num_categories <= MAX_CATEGORIES:
        raise ValueError(
            f"num_categories must be in 1..{MAX_CATEGORIES} (word lists available), got {num_categories}"
        )
    if num_items < num_categories:
        raise ValueError(f"num_items ({num_items}) must be >= num_categories ({num_categories})")
    if num_items < MIN_SEQ_LEN:
        raise ValueError(
            f"num_items must be >= {MIN_SEQ_LEN} so a sequence can avoid repeats, got {num_items}"
        )


def _make_items(
    rng: np.random.Generator, num_items: int, cats: tuple[_Category, ...]
) -> list[dict[str, object]]:
    """Items with a category, a brand and a unique readable title; category counts are balanced."""
    category_of = rng.permutation(np.arange(num_items) % len(cats))
    seen: set[str] = set()
    items: list[dict[str, object]] = []
    for c in category_of:
        cat = cats[int(c)]
        brand_index = int(rng.integers(len(cat.brands)))
        brand = cat.brands[brand_index]
        adj = cat.adjectives[int(rng.integers(len(cat.adjectives)))]
        feature = cat.features[int(rng.integers(len(cat.features)))]
        noun = cat.nouns[int(rng.integers(len(cat.nouns)))]
        size = cat.sizes[int(rng.integers(len(cat.sizes)))]
        base = f"{adj} {feature} {noun} {size}"
        title, copy = base, 1
        while title in seen:  # word combinations can repeat; a model number keeps titles unique
            copy += 1
            title = f"{base} No. {copy}"
        seen.add(title)
        items.append(
            {
                "category": int(c),
                "brand_index": brand_index,
                "title": f"{brand} {title}",
                "description": (
                    f"A {adj.lower()} {noun.lower()} with {feature.lower()} from {brand}, made for {cat.use}."
                ),
                "brand": brand,
                "categories": f"{cat.department}, {cat.name}, {noun}",
            }
        )
    return items


def _weighted_index(rng: np.random.Generator, weights: np.ndarray) -> int:
    """Index drawn with probability proportional to ``weights`` (cheaper than ``rng.choice(p=...)``)."""
    cumulative = np.cumsum(weights)
    pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(pick, len(weights) - 1)


def generate_synthetic(
    out_dir: Path, *, num_users: int = 600, num_items: int = 300, num_categories: int = 8, seed: int = 0
) -> Path:
    """Write ``Synthetic.inter.json`` and ``Synthetic.item.json`` into ``out_dir`` and return it.

    The same arguments always give byte-identical files.
    """
    _validate(num_users, num_items, num_categories)
    rng = np.random.default_rng(seed)
    cats = _CATEGORIES[:num_categories]
    items = _make_items(rng, num_items, cats)
    category = np.asarray([it["category"] for it in items])
    brand = np.asarray([it["brand_index"] for it in items])
    # Zipf-like popularity over a random ranking of the items.
    popularity = 1.0 / np.power(rng.permutation(num_items) + 1.0, ZIPF_EXPONENT)
    members = [np.flatnonzero(category == c) for c in range(num_categories)]
    complement = [(c + 1) % num_categories for c in range(num_categories)]

    def draw(pool: np.ndarray, seen: np.ndarray) -> int | None:
        """A popularity-weighted item of ``pool`` the user has not had yet (None if none is left)."""
        fresh = pool[~seen[pool]]
        if fresh.size == 0:
            return None
        return int(fresh[_weighted_index(rng, popularity[fresh])])

    everything = np.arange(num_items)
    sequences: dict[str, list[int]] = {}
    for user in range(num_users):
        taste = rng.dirichlet(np.full(num_categories, TASTE_CONCENTRATION))
        length = int(rng.integers(MIN_SEQ_LEN, min(MAX_SEQ_LEN, num_items) + 1))
        seq: list[int] = []
        seen = np.zeros(num_items, dtype=bool)
        while len(seq) < length:
            roll = rng.random()
            pool: np.ndarray
            if seq and roll < P_SAME_CATEGORY:
                prev = seq[-1]
                pool = members[category[prev]]
                if rng.random() < P_SAME_BRAND:
                    same_brand = pool[brand[pool] == brand[prev]]
                    pool = same_brand if not seen[same_brand].all() else pool
            elif seq and roll < P_SAME_CATEGORY + P_COMPLEMENT:
                pool = members[complement[category[seq[-1]]]]
            else:
                pool = members[_weighted_index(rng, taste)]
            item = draw(pool, seen)
            if item is None:
                item = draw(everything, seen)
            assert item is not None  # num_items >= length, so an unseen item always exists
            seq.append(item)
            seen[item] = True
        sequences[str(user)] = seq

    item_json = {
        str(i): {k: it[k] for k in ("title", "description", "brand", "categories")}
        for i, it in enumerate(items)
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{NAME}.inter.json").write_text(json.dumps(sequences, indent=4) + "\n", encoding="utf-8")
    (out_dir / f"{NAME}.item.json").write_text(
        json.dumps(item_json, indent=4, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    logger.info(
        "wrote synthetic dataset to %s: %d users, %d items, %d categories, %d interactions (seed %d)",
        out_dir,
        num_users,
        num_items,
        num_categories,
        sum(map(len, sequences.values())),
        seed,
    )
    return out_dir
