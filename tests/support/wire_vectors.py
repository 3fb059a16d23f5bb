"""Golden wire vectors: Python value (or raw JSON) -> the exact bytes JS produces.

Shared by tests/unit/test_jsonbody.py (our encoder must produce them) and
tests/unit/test_jsonbody_node.py (node must agree with every one of them, so
a wrong expectation cannot hide here).
"""

from __future__ import annotations

import sys

NUMBERS: list[tuple[object, bytes]] = [
    (0, b"0"),
    (-7, b"-7"),
    (2**53 - 1, b"9007199254740991"),
    (-(2**53) + 1, b"-9007199254740991"),
    (2**53, b"9007199254740992"),
    (2**53 + 1, b"9007199254740992"),  # rounds to even, like Number("9007199254740993")
    (2**64, b"18446744073709552000"),
    (-(2**64), b"-18446744073709552000"),
    (10**21, b"1e+21"),
    (10**308, b"1e+308"),
    (2**1024 - 2**970 - 1, b"1.7976931348623157e+308"),  # rounds down to DBL_MAX
    (1250.0, b"1250"),
    (350.0, b"350"),
    (0.0, b"0"),
    (-0.0, b"0"),
    (-1.5, b"-1.5"),
    (0.1, b"0.1"),
    (0.1 + 0.2, b"0.30000000000000004"),
    (1e21, b"1e+21"),
    (1e20, b"100000000000000000000"),
    (123456789012345680000.0, b"123456789012345680000"),
    (1e16, b"10000000000000000"),
    (1e15 + 0.5, b"1000000000000000.5"),
    (1.5e300, b"1.5e+300"),
    (-1e21, b"-1e+21"),
    (1e-7, b"1e-7"),
    (1.5e-7, b"1.5e-7"),
    (-1.5e-7, b"-1.5e-7"),
    (1e-6, b"0.000001"),
    (0.000001, b"0.000001"),
    (1.25e-6, b"0.00000125"),
    (1e-5, b"0.00001"),
    (1e-4, b"0.0001"),
    (123e-20, b"1.23e-18"),
    (5e-324, b"5e-324"),  # smallest subnormal
    (2.2250738585072014e-308, b"2.2250738585072014e-308"),
    (1.7976931348623157e308, b"1.7976931348623157e+308"),
]

STRINGS: list[tuple[object, bytes]] = [
    ('quote " backslash \\ slash /', b'"quote \\" backslash \\\\ slash /"'),
    ("\b\f\n\r\t", b'"\\b\\f\\n\\r\\t"'),
    ("\x00\x01\x0b\x1f", b'"\\u0000\\u0001\\u000b\\u001f"'),
    ("\x7f", b'"\x7f"'),  # DEL stays raw
    ("\u2028\u2029", b'"\xe2\x80\xa8\xe2\x80\xa9"'),  # raw since ES2019
    ("রহিম", '"রহিম"'.encode()),
    ("😀", b'"\xf0\x9f\x98\x80"'),
    ("\ud83d\ude00", b'"\xf0\x9f\x98\x80"'),  # a pair as two code points is one char in JS
    ("\ud800", b'"\\ud800"'),  # lone high surrogate: escaped, lowercase
    ("\udfff", b'"\\udfff"'),
    ("x\udc00\ud800y", b'"x\\udc00\\ud800y"'),  # low-then-high is not a pair
    ("\ud800\ud83d\ude00", b'"\\ud800\xf0\x9f\x98\x80"'),
    ("\ud800\n\udc00", b'"\\ud800\\n\\udc00"'),
]

KEY_ORDER_VALUE = {
    "b": 1,
    "4294967295": 2,  # 2**32 - 1 is not an array index
    "4294967294": 3,
    "10": 4,
    "2": 5,
    "01": 6,
    "-1": 7,
    "__proto__": 8,
    "a": 9,
    "0": 10,
    "1.0": 11,
    "\u0661": 12,  # ARABIC-INDIC DIGIT ONE
    "": 13,
    "9007199254740993": 14,
}
KEY_ORDER_WIRE = (
    b'{"0":10,"2":5,"10":4,"4294967294":3,"b":1,"4294967295":2,"01":6,"-1":7,'
    b'"__proto__":8,"a":9,"1.0":11,"\xd9\xa1":12,"":13,"9007199254740993":14}'
)

# page_samples.PRODUCER_EVENTS on the wire: floats 1250.0 -> 1250, Bengali and emoji raw.
_PRODUCER_WIRE_TEXT = {
    "order.created": (
        '{"event":"order.created","data":{"id":"679d3f8a2e1b4c5d6e7f8a9b",'
        '"orderNumber":"ORD-20260131-A1B2","customerName":"রহিম উদ্দিন",'
        '"customerPhone":"+8801712345678","shippingAddress":"বাড়ি ১২, রোড ৫, ধানমন্ডি, ঢাকা",'
        '"items":[{"productId":"678a1b2c3d4e5f6a7b8c9d0e",'
        '"productName":"Wireless Bluetooth Headphones 🎧","quantity":1,"unitPrice":1250},'
        '{"productId":"678a1b2c3d4e5f6a7b8c9d1f","productName":"Phone Case - Black 📱",'
        '"quantity":2,"unitPrice":350}],"subtotal":1950,"status":"pending",'
        '"sourceType":"social","sourceName":"My Shop 🛍️ - Facebook Page",'
        '"createdAt":"2026-01-31T10:30:00.000Z"},"timestamp":"2026-01-31T10:30:01.234Z"}'
    ),
    "order.updated": (
        '{"event":"order.updated","data":{"id":"679d3f8a2e1b4c5d6e7f8a9b",'
        '"orderNumber":"ORD-20260131-A1B2","customerName":"রহিম উদ্দিন",'
        '"customerPhone":"+8801712345678","shippingAddress":"বাড়ি ১২, রোড ৫, ধানমন্ডি, ঢাকা",'
        '"items":[{"productId":"678a1b2c3d4e5f6a7b8c9d0e",'
        '"productName":"Wireless Bluetooth Headphones 🎧","quantity":1,"unitPrice":1250},'
        '{"productId":"678a1b2c3d4e5f6a7b8c9d1f","productName":"Phone Case - Black 📱",'
        '"quantity":2,"unitPrice":350}],"subtotal":1950,"status":"shipped",'
        '"previousStatus":"confirmed","sourceType":"widget","sourceName":"chatsvia.iiniit.com",'
        '"createdAt":"2026-01-31T10:30:00.000Z","updatedAt":"2026-02-02T14:15:30.000Z"},'
        '"timestamp":"2026-02-02T14:15:30.456Z"}'
    ),
    "order.cancelled": (
        '{"event":"order.cancelled","data":{"id":"679d3f8a2e1b4c5d6e7f8a9b",'
        '"orderNumber":"ORD-20260131-A1B2","customerName":"রহিম উদ্দিন",'
        '"customerPhone":"+8801712345678","shippingAddress":"বাড়ি ১২, রোড ৫, ধানমন্ডি, ঢাকা",'
        '"items":[{"productId":"678a1b2c3d4e5f6a7b8c9d0e",'
        '"productName":"Wireless Bluetooth Headphones 🎧","quantity":1,"unitPrice":1250}],'
        '"subtotal":1250,"status":"cancelled","previousStatus":"pending","sourceType":"social",'
        '"sourceName":"My Shop 🛍️ - Facebook Page","createdAt":"2026-01-31T10:30:00.000Z",'
        '"updatedAt":"2026-02-01T09:45:12.000Z"},"timestamp":"2026-02-01T09:45:12.789Z"}'
    ),
}
PRODUCER_WIRE = {event: text.encode("utf-8") for event, text in _PRODUCER_WIRE_TEXT.items()}

CANONICAL: list[tuple[bytes, bytes]] = [
    # duplicate keys: first position, last value (like a JS object)
    (b'{"b":1,"a":2,"b":3}', b'{"b":3,"a":2}'),
    (b'{"b":1,"1":2,"1":3,"0":4}', b'{"0":4,"1":3,"b":1}'),
    (
        b' {\n "z" : 1.50 ,\t"1" : -0 , "e": 1E2, "s": "\\u00e9\\/\\ud83d\\ude00\\ud800",'
        b' "tiny": 1e-400, "big": 12345678901234567890 } \r\n',
        b'{"1":0,"z":1.5,"e":100,"s":"\xc3\xa9/\xf0\x9f\x98\x80\\ud800","tiny":0,'
        b'"big":12345678901234567000}',
    ),
    (b"[1.7976931348623157e308, 5e-324, 2e-324]", b"[1.7976931348623157e+308,5e-324,0]"),
    (str(int(sys.float_info.max)).encode(), b"1.7976931348623157e+308"),
    (b'"\\u2028\\u007f\\u001F\\/"', b'"\xe2\x80\xa8\x7f\\u001f/"'),
]
