"""A deterministic corpus of 1,000 multilingual names and the subjects they are mailed under,
for the header encoding tests (test_rfc2047_corpus.py): the names a user's list really
holds, in German, Polish, Turkish, Chinese, Russian, Arabic, Vietnamese, Japanese, and some
with emoji (single, skin tone, ZWJ sequences, flags)."""

from __future__ import annotations

# (first names, last names, how a name is written: "first last" or "lastfirst")
_SCRIPTS: list[tuple[list[str], list[str], str]] = [
    (  # German
        ["Jürgen", "Käthe", "Björn", "Lena", "Günther", "Sören", "Maximilian", "Ölga"],
        ["Müller", "Groß", "Schäfer", "Weiß", "Köhler", "Straßburger-Überlingen", "Bär", "Lehmann"],
        "first last",
    ),
    (  # Polish
        ["Łukasz", "Małgorzata", "Zbigniew", "Agnieszka", "Paweł", "Żaneta", "Grzegorz", "Ewa"],
        ["Wiśniewski", "Kowalczyk", "Wójcik", "Zieliński", "Szymańska", "Dąbrowski", "Łęcka"]
        + ["Nowak"],
        "first last",
    ),
    (  # Turkish
        ["Çağrı", "Şükrü", "İlkay", "Gülşen", "Ömer", "Ayşe", "Yiğit", "Işıl"],
        ["Yılmaz", "Öztürk", "Şahin", "Çelik", "Doğan", "Aydın", "Kılıç", "Güneş"],
        "first last",
    ),
    (  # Chinese
        ["伟", "芳", "娜", "秀英", "敏", "静", "强", "磊"],
        ["王", "李", "张", "刘", "陈", "杨", "欧阳", "司马"],
        "lastfirst",
    ),
    (  # Russian
        ["Александр", "Екатерина", "Дмитрий", "Юлия", "Сергей", "Наталья", "Ёлка", "Пётр"],
        ["Иванов", "Смирнова", "Кузнецов", "Попова", "Соколов", "Лебедева", "Новиков", "Фёдорова"],
        "first last",
    ),
    (  # Arabic (right to left)
        ["محمد", "فاطمة", "أحمد", "مريم", "علي", "زينب", "عمر", "نور"],
        ["العلي", "الحسن", "عبد الله", "الخطيب", "منصور", "الشامي", "حداد", "السيد"],
        "first last",
    ),
    (  # Vietnamese (combining-heavy letters, here precomposed and decomposed)
        ["Nguyễn Văn", "Trần Thị", "Lê", "Phạm", "Hoàng", "Huỳnh", "Vũ", "Đặng"],
        ["An", "Bình", "Cường", "Dũng", "Hương", "Linh", "Ngọc", "Thu\u0303y"],  # ỹ decomposed
        "first last",
    ),
    (  # Japanese
        ["太郎", "花子", "翔太", "さくら", "健一", "美咲", "ユウキ", "陽菜"],
        ["佐藤", "鈴木", "高橋", "田中", "渡辺", "伊藤", "山本", "中村"],
        "lastfirst",
    ),
    (  # Emoji, as people put them in their names
        ["Sam 🚀", "Mia ✨", "Leo 👍🏽", "Ava 🇩🇪", "Kai 👨‍👩‍👧", "Zoë 🏳️‍🌈", "Noor 🌙", "Tom"],
        ["Rocket", "Sparkle", "O'Neil", "🎉", "Smith-Jones", "👩🏿‍💻 Dev", "Nakamura 寿司", "Ünal"],
        "first last",
    ),
]

SUBJECTS = {
    "invoice-de": "Ihre Rechnung {{ invoice_id }} über {{ amount }} € – {{ name }} 🎉",
    "invoice-en": (
        "Hello {{ name }}, your invoice {{ invoice_id }} of {{ amount }} EUR is ready – "
        "thanks for your order"
    ),
    "cjk-run": (
        "{{ name }}様、ご注文ありがとうございます。請求書番号{{ invoice_id }}の金額は"
        "{{ amount }}円です。お支払い期限は月末となっておりますのでご確認をお願いいたします"
    ),
    "arabic": "مرحبا {{ name }}، فاتورتك رقم {{ invoice_id }} بقيمة {{ amount }} جاهزة  للدفع",
    "polish-spaces": "  Zaproszenie:  {{ name }} —  spotkanie w Łodzi 🇵🇱, prosimy o potwierdzenie",
}


def names(count: int = 1000) -> list[str]:
    """``count`` names, the same every time: script by script, first and last names
    combined in a different order in each round."""
    found: list[str] = []
    for number in range(count):
        firsts, lasts, order = _SCRIPTS[number % len(_SCRIPTS)]
        round_ = number // len(_SCRIPTS)
        first = firsts[round_ % len(firsts)]
        last = lasts[(round_ * 3 + round_ // len(firsts)) % len(lasts)]
        found.append(last + first if order == "lastfirst" else f"{first} {last}")
    return found


def rows(count: int = 1000) -> list[dict[str, str]]:
    """CSV rows for the corpus: email, name, invoice_id, amount."""
    return [
        {
            "email": f"person{number}@example.org",
            "name": name,
            "invoice_id": f"INV-2026-{number:05d}",
            "amount": f"{(number * 7919) % 100000 / 100:,.2f}",
        }
        for number, name in enumerate(names(count), 1)
    ]
