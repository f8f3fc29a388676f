"""Structured extraction: records pulled out of free text as validated objects.

Start a server first (`.venv/bin/parrot serve`), then run `python cookbook/extraction.py`.

Three ways, one schema (`Contact`): LangChain's `with_structured_output` (the answer is
constrained to the schema, so it always parses), the same chain shipped to the server as one
native program per batch, and the SDK's semantic function with `json_schema=`, whose output
another call reads in the same program (an output limited to `choices` here).
"""

from __future__ import annotations

import time

from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel, Field

from parrot_integrations import ParrotClient, SemanticFunction
from parrot_integrations.langchain import ChatParrot, ship


class Contact(BaseModel):
    """A person and how to reach them."""

    name: str = Field(max_length=40)
    email: str = Field(pattern=r"^[a-z0-9._-]+@[a-z0-9.-]+\.[a-z]{2,}$")
    city: str = Field(max_length=30)


TEXTS = [
    "Hi, I'm Maria Lopez from Madrid; write to maria.lopez@example.com any time.",
    "Contact Tom Becker (tom@becker.de), our partner in Hamburg.",
    "Questions? Ask Aiko Sato in Osaka at aiko.sato@example.jp.",
]


def langchain_extraction() -> None:
    llm = ChatParrot(temperature=0, max_tokens=80)
    prompt = ChatPromptTemplate.from_messages([("human", "Extract the contact:\n{text}")])
    chain = prompt | llm.with_structured_output(Contact)
    t = time.perf_counter()
    for contact in chain.batch([{"text": x} for x in TEXTS]):
        print(f"  {contact!r}")
    print(f"  with_structured_output, batched: {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    shipped = ship(chain).batch([{"text": x} for x in TEXTS])
    print(
        f"  shipped (one native program): {time.perf_counter() - t:.2f} s, same: "
        f"{shipped == chain.batch([{'text': x} for x in TEXTS])}\n"
    )


def sdk_extraction() -> None:
    extract = SemanticFunction(
        "Extract the contact as JSON:\n{{input:text}}{{output:contact}}",
        chat=True,
        json_schema=Contact,
        max_tokens=80,
        temperature=0,
    )
    office = SemanticFunction(
        "Which of our offices (Madrid, Hamburg, Osaka) is nearest to this contact?\n"
        "{{input:contact}}{{output:office}}",
        chat=True,
        choices=["Madrid", "Hamburg", "Osaka"],
        temperature=0,
    )
    with ParrotClient() as client, client.session() as s:
        with s.program() as p:  # both steps of every text in one request
            pairs = [(c := extract(p, text=x), office(p, contact=c)) for x in TEXTS]
        for contact, nearest in pairs:
            print(f"  {Contact.model_validate_json(contact.get())!r} -> office {nearest.get()}")


def main() -> None:
    print("LangChain:")
    langchain_extraction()
    print("SDK, a structured step feeding another call:")
    sdk_extraction()


if __name__ == "__main__":
    main()
