"""JSON schemas for the structured-output tests, each with the request that asks for it: nested
objects, arrays, enums, optional and nullable fields, bounded numbers, patterns, references."""

from __future__ import annotations

from typing import Any

# Small enough for a 135M model to fill in a few dozen tokens.
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 2},
    },
    "required": ["name", "age", "pets"],
}

ADDRESS = {
    "type": "object",
    "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
    "required": ["street", "city"],
}


def obj(required: bool = True, **props: Any) -> dict[str, Any]:
    """An object schema with these properties, all required unless told otherwise."""
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(props)
    return schema


STR, INT, NUM, BOOL = (
    {"type": "string"},
    {"type": "integer"},
    {"type": "number"},
    {"type": "boolean"},
)

# (what to ask for, the schema)
SCHEMAS: list[tuple[str, dict[str, Any]]] = [
    (
        "a person named Ann, aged 31",
        obj(name=STR, age={"type": "integer", "minimum": 0, "maximum": 150}),
    ),
    ("the point (3, 4)", obj(x=NUM, y=NUM)),
    ("whether water is wet", obj(answer=BOOL)),
    ("the color of the sky", obj(color={"enum": ["red", "green", "blue"]})),
    (
        "up to three tags for a cooking blog",
        obj(tags={"type": "array", "items": STR, "minItems": 1, "maxItems": 3}),
    ),
    ("a letter to Bob at 1 Main St, Springfield", obj(name=STR, address=ADDRESS)),
    (
        "a film title, with a subtitle if it has one",
        obj(required=False, title=STR, subtitle=STR) | {"required": ["title"]},
    ),
    (
        "a rating of a good pizza, 1 to 5",
        obj(rating={"type": "integer", "minimum": 1, "maximum": 5}),
    ),
    (
        "today's temperature in Celsius",
        obj(celsius={"type": "number", "minimum": -50, "maximum": 50}),
    ),
    (
        "a shopping list with at most three items",
        obj(
            items={
                "type": "array",
                "maxItems": 3,
                "items": obj(name=STR, qty={"type": "integer", "minimum": 1}),
            }
        ),
    ),
    (
        "a product code of 3 to 6 letters",
        obj(code={"type": "string", "minLength": 3, "maxLength": 6}),
    ),
    ("a report header", obj(version={"const": 1}, kind={"const": "report"}, title=STR)),
    ("the answer to 6 times 7", obj(value={"anyOf": [INT, STR]})),
    ("a nickname for Robert, or null", obj(nickname={"type": ["string", "null"]})),
    ("the first four prime numbers", {"type": "array", "items": INT, "maxItems": 4}),
    ("whether it will rain tomorrow", {"enum": ["yes", "no", "maybe"]}),
    (
        "a number from 0 to 10 for how much you like tea",
        {"type": "integer", "minimum": 0, "maximum": 10},
    ),
    (
        "a 2 by 2 identity matrix",
        {
            "type": "array",
            "maxItems": 2,
            "items": {
                "type": "array",
                "maxItems": 2,
                "items": {"type": "integer", "minimum": 0, "maximum": 9},
            },
        },
    ),
    (
        "a famous book",
        obj(
            title=STR,
            author=STR,
            year={"type": "integer", "minimum": 1000, "maximum": 2100},
            genres={
                "type": "array",
                "maxItems": 2,
                "items": {"enum": ["fiction", "history", "science"]},
            },
        ),
    ),
    (
        "a home and a work address",
        {
            "$defs": {"addr": ADDRESS},
            **obj(home={"$ref": "#/$defs/addr"}, work={"$ref": "#/$defs/addr"}),
        },
    ),
    ("a task: buy milk", obj(task=STR, done=BOOL, priority={"enum": ["low", "medium", "high"]})),
    ("the date of New Year 2024", obj(date={"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"})),
    (
        "a person's full name and city",
        obj(first=STR, last=STR, city=STR) | {"additionalProperties": False},
    ),
    (
        "a meetup event",
        obj(name=STR, attendees={"type": "integer", "minimum": 0}, online=BOOL),
    ),
    (
        "a pancake recipe, short",
        obj(
            name=STR,
            ingredients={
                "type": "array",
                "maxItems": 3,
                "items": obj(item=STR, grams={"type": "number", "minimum": 0}),
            },
        ),
    ),
    ("the price of a coffee", obj(price={"type": "number", "exclusiveMinimum": 0})),
    (
        "a circle of radius 2",
        obj(
            shape={
                "oneOf": [
                    obj(kind={"const": "circle"}, radius=NUM),
                    obj(kind={"const": "square"}, side=NUM),
                ]
            }
        ),
    ),
    ("a one-word greeting", {"type": "string", "maxLength": 20}),
    (
        "a small whole number between -5 and 5",
        obj(count={"type": "integer", "minimum": -5, "maximum": 5}),
    ),
    ("a deeply nested note", obj(a=obj(b=obj(c=obj(note=STR))))),
    (
        "two to four test scores out of 100",
        obj(
            scores={
                "type": "array",
                "items": {"type": "number", "minimum": 0, "maximum": 100},
                "minItems": 2,
                "maxItems": 4,
            }
        ),
    ),
    (
        "a yes/no answer with a short reason",
        obj(answer={"type": "boolean"}, reason={"type": "string", "maxLength": 60}),
    ),
]
