"""Offline procedural personas for smoke tests, and the region table the LLM pipeline's bias mitigation uses.

Procedural personas are NOT LLM-generated: they are drawn from small built-in vocabularies per region and
templated captions, and each one says so in ``extra["generator"]`` (:data:`PROCEDURAL_LABEL`). They have the
full DESIGN.md shape (30 posts in the paper's content-type mix, elements in every canonical category), so
they exercise ingestion, retrieval and scoring without any endpoint, but they are not benchmark data.

:data:`REGIONS` holds 9 ethnicity/region groups and 71 cities; the LLM pipeline re-maps low-confidence
locations into it (supplement 9.2.2).

Example:
    >>> p = procedural_persona(0)
    >>> p.extra["generator"]
    'procedural (offline smoke-test data, not LLM-generated)'
    >>> len(p.posts)
    30
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from vptt.agents.persona_gen.faces import face_attributes, stable_u64
from vptt.agents.persona_gen.prompts import plan_slots
from vptt.core.models import CANONICAL_CATEGORIES, Persona

PROCEDURAL_LABEL = "procedural (offline smoke-test data, not LLM-generated)"


@dataclass(frozen=True)
class Region:
    """One region/ethnicity group: its places ``(country, city, ethnicity)`` and visual vocabulary."""

    key: str
    group: str
    places: tuple[tuple[str, str, str], ...]
    vocab: dict[str, tuple[str, ...]]


def _region(key: str, group: str, places: str, **vocab: str) -> Region:
    rows = tuple(tuple(x.strip() for x in p.split("/")) for p in places.split(";"))
    terms = {c: tuple(x.strip() for x in v.split(";")) for c, v in vocab.items()}
    return Region(key, group, rows, terms)  # type: ignore[arg-type]


REGIONS: dict[str, Region] = {r.key: r for r in (
    _region("east_asia", "East Asian",
            "Japan/Kyoto/Japanese; Japan/Sapporo/Japanese; South Korea/Seoul/Korean; "
            "South Korea/Busan/Korean; China/Chengdu/Han Chinese; China/Hangzhou/Han Chinese; "
            "Taiwan/Taipei/Taiwanese; Mongolia/Ulaanbaatar/Mongolian",
            background="torii gate path; Namsan Tower skyline; West Lake willows; neon alley; "
                       "temple moss garden; open steppe under a wide sky",
            environment="night market street; wooden tea house; hanok village lane; bamboo grove; "
                        "subway platform",
            objects="ceramic tea set; paper lantern; bowl of ramen; folding fan; steamed dumpling basket",
            materials="lacquered wood; washi paper; silk brocade; bamboo weave; celadon glaze",
            appearance="linen shirt and wide trousers; quilted jacket; knit beanie; round glasses; "
                       "canvas tote bag"),
    _region("south_asia", "South Asian",
            "India/Jaipur/Rajasthani Indian; India/Kochi/Malayali Indian; India/Kolkata/Bengali Indian; "
            "India/Srinagar/Kashmiri; Pakistan/Lahore/Punjabi Pakistani; "
            "Bangladesh/Dhaka/Bengali Bangladeshi; Sri Lanka/Kandy/Sinhalese; Nepal/Kathmandu/Newar Nepali",
            background="pink sandstone palace walls; Dal Lake houseboats; backwater canals with palms; "
                       "stupa with prayer flags; Mughal garden terraces",
            environment="spice market; rooftop terrace; ghat steps by the river; tea plantation; "
                        "chai stall",
            objects="brass oil lamp; clay chai cups; marigold garlands; block-printed textiles; "
                    "auto-rickshaw",
            materials="hand-block cotton; carved sandstone; polished brass; pashmina wool; terracotta",
            appearance="cotton kurta; silk saree; embroidered shawl; silver bangles; leather sandals"),
    _region("southeast_asia", "Southeast Asian",
            "Vietnam/Hanoi/Kinh Vietnamese; Vietnam/Hoi An/Kinh Vietnamese; Thailand/Chiang Mai/Thai; "
            "Indonesia/Yogyakarta/Javanese; Philippines/Cebu/Cebuano Filipino; "
            "Malaysia/Penang/Malaysian Chinese; Cambodia/Siem Reap/Khmer",
            background="rice terraces; limestone karsts over water; temple spires; lantern-lit old town; "
                       "row of shophouses",
            environment="floating market; street food stall; beach cove; sidewalk coffee shop; "
                        "jungle trail",
            objects="conical hat; phin coffee filter; woven rattan basket; long-tail boat; "
                    "banana leaf parcel",
            materials="rattan; teak wood; batik cotton; lacquerware; weathered plaster",
            appearance="ao dai tunic; batik sarong; straw hat; flip-flops; beaded bracelet"),
    _region("mena", "Middle Eastern / North African",
            "Morocco/Marrakech/Amazigh Moroccan; Morocco/Fes/Arab Moroccan; Egypt/Cairo/Egyptian; "
            "Egypt/Luxor/Egyptian; Turkey/Istanbul/Turkish; Jordan/Amman/Jordanian; Iran/Isfahan/Persian; "
            "Lebanon/Beirut/Lebanese",
            background="minaret against the sky; riad courtyard fountain; Nile feluccas; "
                       "Bosphorus ferries; blue-tiled mosque dome",
            environment="souk alley; rooftop cafe; spice bazaar; old medina gate; seaside corniche",
            objects="brass lantern; mint tea glasses; kilim rug; tagine pot; copper coffee pot",
            materials="zellige tilework; tadelakt plaster; hand-knotted wool; hammered copper; cedar wood",
            appearance="linen djellaba; embroidered scarf; leather babouche slippers; gold hoop earrings; "
                       "tailored blazer"),
    _region("sub_saharan_africa", "Sub-Saharan African",
            "Nigeria/Lagos/Yoruba Nigerian; Ghana/Accra/Akan Ghanaian; Kenya/Nairobi/Kikuyu Kenyan; "
            "Ethiopia/Addis Ababa/Amhara Ethiopian; Senegal/Dakar/Wolof Senegalese; "
            "South Africa/Cape Town/Xhosa South African; Tanzania/Zanzibar City/Swahili Tanzanian",
            background="Table Mountain; acacia savanna; carved Stone Town doors; Lagos lagoon skyline; "
                       "painted fishing boats",
            environment="open-air market; beach at dusk; rooftop bar; church courtyard; textile workshop",
            objects="kente cloth; djembe drum; beaded necklace; jebena coffee pot; woven basket",
            materials="wax-print cotton; kente silk; carved ebony; red laterite; glass beads",
            appearance="Ankara-print dress; gele headwrap; agbada robe; kitenge shirt; braided hair"),
    _region("europe", "European",
            "Italy/Naples/Southern Italian; Italy/Venice/Venetian Italian; "
            "Spain/Seville/Andalusian Spanish; Portugal/Porto/Portuguese; Poland/Krakow/Polish; "
            "Greece/Thessaloniki/Greek; Norway/Bergen/Norwegian; Ireland/Galway/Irish; "
            "United Kingdom/Edinburgh/Scottish",
            background="cobbled old-town square; canal with gondolas; azulejo-tiled facades; "
                       "fjord with wooden houses; Gothic cathedral spire",
            environment="cafe terrace; flower market; harbour promenade; wine bar; second-hand bookshop",
            objects="espresso cup; vintage bicycle; wicker picnic basket; ceramic pitcher; film camera",
            materials="terracotta roof tiles; weathered oak; wrought iron; marble; wool tweed",
            appearance="wool coat; striped sailor shirt; linen dress; leather boots; knitted scarf"),
    _region("latin_america", "Latin American",
            "Mexico/Oaxaca/Zapotec Mexican; Mexico/Guadalajara/Mestizo Mexican; "
            "Peru/Cusco/Quechua Peruvian; Colombia/Medellin/Paisa Colombian; Argentina/Mendoza/Argentine; "
            "Brazil/Salvador/Afro-Brazilian; Chile/Valparaiso/Chilean; Cuba/Havana/Cuban",
            background="Andes mountain range; colourful hillside houses; colonial cathedral; "
                       "vineyard rows; agave fields",
            environment="mercado stall; plaza at dusk; cantina; street mural alley; coffee farm",
            objects="papel picado banners; clay comal; mate gourd; alpaca blanket; hand-painted ceramics",
            materials="alpaca wool; adobe; painted tiles; woven palm; embroidered cotton",
            appearance="embroidered huipil blouse; woollen poncho; straw hat; denim jacket; "
                       "colourful scarf"),
    _region("north_america", "North American",
            "United States/New Orleans/African American; United States/Santa Fe/Hispanic American; "
            "United States/Seattle/Asian American; United States/Austin/White American; "
            "United States/Albuquerque/Dine (Navajo); Canada/Montreal/French Canadian; "
            "Canada/Halifax/Canadian; Canada/Vancouver/Chinese Canadian",
            background="brick warehouses; desert mesas; pine forest lake; downtown skyline; wooden pier",
            environment="diner booth; farmers market; jazz club; national park trail; record store",
            objects="vintage pickup truck; cast-iron skillet; vinyl records; canoe; skateboard",
            materials="reclaimed wood; red brick; denim; flannel; turquoise and silver",
            appearance="denim jacket; flannel shirt; baseball cap; hiking boots; turquoise jewellery"),
    _region("oceania", "Pacific / Oceanian",
            "New Zealand/Rotorua/Maori; New Zealand/Wellington/Pakeha New Zealander; "
            "Australia/Darwin/Aboriginal Australian; Australia/Hobart/Australian; "
            "Fiji/Suva/iTaukei Fijian; Samoa/Apia/Samoan; Papua New Guinea/Port Moresby/Papuan; "
            "Tonga/Nuku'alofa/Tongan",
            background="geothermal steam vents; turquoise lagoon; red desert rock; palm-lined shore; "
                       "rainforest waterfall",
            environment="beach fale; surf break; outback track; marae meeting ground; fish market",
            objects="carved wooden paddle; outrigger canoe; tapa cloth; surfboard; kava bowl",
            materials="pounamu jade; tapa bark cloth; woven pandanus; driftwood; volcanic stone",
            appearance="floral shirt; flower crown; board shorts; pounamu pendant; wide-brim hat"),
)}
"""Nine region/ethnicity groups, 71 cities (supplement 9.2.2: "9 ethnicity groups and 60+ cities")."""

_SHARED = {
    "foreground": ("hands holding a warm cup", "plate of local food", "person in mid-stride",
                   "friends laughing", "person seated on old steps", "street vendor at work"),
    "lighting": ("soft morning light", "harsh midday sun", "golden hour glow", "blue hour twilight",
                 "warm lamp light", "overcast diffuse light"),
    "actions": ("walking through the crowd", "cooking together", "reading in a corner", "dancing",
                "bargaining at a stall", "taking a photo"),
}
OCCUPATIONS = ("teacher", "nurse", "software developer", "chef", "photographer", "architect", "farmer",
               "musician", "shop owner", "student", "civil engineer", "tailor", "barista", "tour guide")
INTERESTS = ("street photography", "home cooking", "hiking", "live music", "reading", "football", "gardening",
             "coffee", "local markets", "handicrafts", "cycling", "dancing", "cinema", "swimming")
PERSONALITY = ("curious", "warm", "patient", "adventurous", "meticulous", "playful", "calm", "outgoing")
TONES = ("warm and chatty", "short and poetic", "playful with emojis", "informative", "quietly reflective")
_TYPE_PHRASE = {"activity": "candid activity", "appreciation": "quiet appreciation",
                "shared": "shared moment", "selfie": "casual selfie"}


def region_vocabulary(region: Region, rng: random.Random) -> dict[str, list[str]]:
    """Per canonical category: the region's terms plus shared ones, shuffled."""
    out: dict[str, list[str]] = {}
    for cat in CANONICAL_CATEGORIES:
        terms = list(region.vocab.get(cat, ())) + list(_SHARED.get(cat, ()))
        rng.shuffle(terms)
        out[cat] = terms
    return out


def _caption(slot_type: str, time: str, season: str, social: str, city: str, e: dict[str, list[str]]) -> str:
    people = {"no people": "No people appear in the frame; the scene is left to speak for itself",
              "solo": "The person is alone in the frame, relaxed and absorbed in the moment",
              "group": "A small group shares the frame, faces turned towards each other in easy conversation"}
    article = "An" if season[0] in "aeiou" else "A"
    s = [f"{article} {season} {_TYPE_PHRASE[slot_type]} photo taken at {time} in a {e['environment'][0]} "
         f"in {city}.",
         f"In the foreground the eye lands first on {e['foreground'][0]}, framed slightly off centre, while "
         f"{e['objects'][0]} and {e['objects'][1]} sit close enough to the lens to show their texture.",
         f"Behind them the view opens onto {e['background'][0]}, softly out of focus, which places the "
         f"picture firmly in its neighbourhood and gives it a sense of depth and quiet scale.",
         f"The light is {e['lighting'][0]}, catching the surfaces of {e['materials'][0]} and "
         f"{e['materials'][1]} and laying long, gentle shadows across the ground.",
         f"{people[social]}; the main action is {e['actions'][0]}, caught naturally rather than posed.",
         f"Visible details include {e['appearance'][0]} and {e['appearance'][1]}, colours that echo the "
         f"rest of the scene without competing with it.",
         "The composition follows a loose rule of thirds with a clear leading line from the lower corner "
         "towards the background, and the palette stays muted and harmonious throughout.",
         f"It feels like an ordinary {season} day recorded with care: unhurried, local and personal, the "
         f"kind of small scene this feed returns to again and again.",
         "The overall mood is calm and attentive, inviting the viewer to slow down and notice textures, "
         "light and the everyday rituals of this place."]
    return " ".join(s)


def procedural_persona(index: int, *, seed: int = 0, n_posts: int = 30, id_prefix: str = "proc_") -> Persona:
    """One procedural persona (region = ``index`` mod 9, everything else drawn from ``(seed, index)``)."""
    rng = random.Random(stable_u64(f"procedural|{seed}|{index}"))
    region = list(REGIONS.values())[index % len(REGIONS)]
    country, city, ethnicity = rng.choice(region.places)
    vocab = region_vocabulary(region, rng)
    pid = f"{id_prefix}{index:06d}"
    age = rng.randint(18, 75)
    occupation, interests = rng.choice(OCCUPATIONS), rng.sample(INTERESTS, 6)
    posts = []
    for slot in plan_slots(n_posts, stable_u64(f"slots|{seed}|{index}") % 2**32):
        e = {c: rng.sample(v, k=min(2, len(v))) for c, v in vocab.items()}
        posts.append({"post_id": f"{pid}_{slot.index:03d}", "type": slot.type,
                      "caption": _caption(slot.type, slot.time_of_day, slot.season, slot.social, city, e),
                      "elements": e, "time_of_day": slot.time_of_day, "season": slot.season,
                      "social": slot.social})
    used = {t for p in posts for v in p["elements"].values() for t in v}  # type: ignore[union-attr]
    return Persona.model_validate({
        "persona_id": pid,
        "demographics": {"age": age, "gender": rng.choice(("female", "male", "unknown")),
                         "country": country, "city": city, "ethnicity": ethnicity, "occupation": occupation,
                         "interests": interests, "personality": rng.sample(PERSONALITY, 3),
                         "social_media_tone": rng.choice(TONES)},
        "summary": (f"A {age}-year-old {occupation} from {city}, {country}, whose feed mixes {interests[0]}, "
                    f"{interests[1]} and everyday scenes of {region.vocab['environment'][0]}s."),
        "preferences": [f"often photographs {t}" for t in vocab["environment"][:3]]
                       + [f"favours {t}" for t in vocab["lighting"][:3]]
                       + [f"likes the texture of {t}" for t in vocab["materials"][:3]],
        "elements": {c: [t for t in v if t in used] for c, v in vocab.items()},
        "posts": posts,
        "extra": {"generator": PROCEDURAL_LABEL,
                  "generation": {"mode": "procedural", "seed": seed, "index": index, "region": region.key},
                  "face": face_attributes(pid, age).as_dict()},
    })


def generate_procedural(n: int, *, seed: int = 0, n_posts: int = 30, id_prefix: str = "proc_"
                        ) -> list[Persona]:
    """``n`` procedural personas (offline smoke-test data, not LLM-generated), regions balanced."""
    if n < 0 or n_posts < 1:
        raise ValueError("n must be >= 0 and n_posts >= 1")
    return [procedural_persona(i, seed=seed, n_posts=n_posts, id_prefix=id_prefix) for i in range(n)]
