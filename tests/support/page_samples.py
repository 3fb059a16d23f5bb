"""The product page's example payloads, and the same events as our producer holds them.

``*_TEXT`` are the three payloads exactly as printed on the Chatsvia webhook
page (its line breaks included).  ``PRODUCER_EVENTS`` are those events the
way a Python producer builds them: prices come out of the database as floats
(``1250.0``), the customer's name is in Bengali and product / shop names
carry emoji, which is what real traffic looks like.
"""

from __future__ import annotations

ORDER_CREATED_TEXT = b"""\
{
"event": "order.created",
"data": {
"id": "679d3f8a2e1b4c5d6e7f8a9b",
"orderNumber": "ORD-20260131-A1B2",
"customerName": "Rahim Uddin",
"customerPhone": "+8801712345678",
"shippingAddress": "House 12, Road 5, Dhanmondi, Dhaka",
"items": [
{
"productId": "678a1b2c3d4e5f6a7b8c9d0e",
"productName": "Wireless Bluetooth Headphones",
"quantity": 1,
"unitPrice": 1250
},
{
"productId": "678a1b2c3d4e5f6a7b8c9d1f",
"productName": "Phone Case - Black",
"quantity": 2,
"unitPrice": 350
}
],
"subtotal": 1950,
"status": "pending",
"sourceType": "social",
"sourceName": "My Shop - Facebook Page",
"createdAt": "2026-01-31T10:30:00.000Z"
},
"timestamp": "2026-01-31T10:30:01.234Z"
}"""

ORDER_UPDATED_TEXT = b"""\
{
"event": "order.updated",
"data": {
"id": "679d3f8a2e1b4c5d6e7f8a9b",
"orderNumber": "ORD-20260131-A1B2",
"customerName": "Rahim Uddin",
"customerPhone": "+8801712345678",
"shippingAddress": "House 12, Road 5, Dhanmondi, Dhaka",
"items": [
{
"productId": "678a1b2c3d4e5f6a7b8c9d0e",
"productName": "Wireless Bluetooth Headphones",
"quantity": 1,
"unitPrice": 1250
},
{
"productId": "678a1b2c3d4e5f6a7b8c9d1f",
"productName": "Phone Case - Black",
"quantity": 2,
"unitPrice": 350
}
],
"subtotal": 1950,
"status": "shipped",
"previousStatus": "confirmed",
"sourceType": "widget",
"sourceName": "chatsvia.iiniit.com",
"createdAt": "2026-01-31T10:30:00.000Z",
"updatedAt": "2026-02-02T14:15:30.000Z"
},
"timestamp": "2026-02-02T14:15:30.456Z"
}"""

ORDER_CANCELLED_TEXT = b"""\
{
"event": "order.cancelled",
"data": {
"id": "679d3f8a2e1b4c5d6e7f8a9b",
"orderNumber": "ORD-20260131-A1B2",
"customerName": "Rahim Uddin",
"customerPhone": "+8801712345678",
"shippingAddress": "House 12, Road 5, Dhanmondi, Dhaka",
"items": [
{
"productId": "678a1b2c3d4e5f6a7b8c9d0e",
"productName": "Wireless Bluetooth Headphones",
"quantity": 1,
"unitPrice": 1250
}
],
"subtotal": 1250,
"status": "cancelled",
"previousStatus": "pending",
"sourceType": "social",
"sourceName": "My Shop - Facebook Page",
"createdAt": "2026-01-31T10:30:00.000Z",
"updatedAt": "2026-02-01T09:45:12.000Z"
},
"timestamp": "2026-02-01T09:45:12.789Z"
}"""

PAGE_TEXTS = {
    "order.created": ORDER_CREATED_TEXT,
    "order.updated": ORDER_UPDATED_TEXT,
    "order.cancelled": ORDER_CANCELLED_TEXT,
}


def _items(*lines: tuple[str, str, int, float]) -> list[dict[str, object]]:
    return [
        {"productId": pid, "productName": name, "quantity": qty, "unitPrice": price}
        for pid, name, qty, price in lines
    ]


_HEADPHONES = ("678a1b2c3d4e5f6a7b8c9d0e", "Wireless Bluetooth Headphones 🎧", 1, 1250.0)
_CASE = ("678a1b2c3d4e5f6a7b8c9d1f", "Phone Case - Black 📱", 2, 350.0)
_CUSTOMER: dict[str, object] = {
    "id": "679d3f8a2e1b4c5d6e7f8a9b",
    "orderNumber": "ORD-20260131-A1B2",
    "customerName": "রহিম উদ্দিন",
    "customerPhone": "+8801712345678",
    "shippingAddress": "বাড়ি ১২, রোড ৫, ধানমন্ডি, ঢাকা",
}

PRODUCER_EVENTS: dict[str, dict[str, object]] = {
    "order.created": {
        "event": "order.created",
        "data": {
            **_CUSTOMER,
            "items": _items(_HEADPHONES, _CASE),
            "subtotal": 1950.0,
            "status": "pending",
            "sourceType": "social",
            "sourceName": "My Shop 🛍️ - Facebook Page",
            "createdAt": "2026-01-31T10:30:00.000Z",
        },
        "timestamp": "2026-01-31T10:30:01.234Z",
    },
    "order.updated": {
        "event": "order.updated",
        "data": {
            **_CUSTOMER,
            "items": _items(_HEADPHONES, _CASE),
            "subtotal": 1950.0,
            "status": "shipped",
            "previousStatus": "confirmed",
            "sourceType": "widget",
            "sourceName": "chatsvia.iiniit.com",
            "createdAt": "2026-01-31T10:30:00.000Z",
            "updatedAt": "2026-02-02T14:15:30.000Z",
        },
        "timestamp": "2026-02-02T14:15:30.456Z",
    },
    "order.cancelled": {
        "event": "order.cancelled",
        "data": {
            **_CUSTOMER,
            "items": _items(_HEADPHONES),
            "subtotal": 1250.0,
            "status": "cancelled",
            "previousStatus": "pending",
            "sourceType": "social",
            "sourceName": "My Shop 🛍️ - Facebook Page",
            "createdAt": "2026-01-31T10:30:00.000Z",
            "updatedAt": "2026-02-01T09:45:12.000Z",
        },
        "timestamp": "2026-02-01T09:45:12.789Z",
    },
}
