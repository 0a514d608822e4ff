"""ToolWorld templates of the shop app: prices, orders, purchases and returns."""

from __future__ import annotations

from agentsd.envs.toolworld.apps import SHOP_ACCOUNT
from agentsd.envs.toolworld.grader import Added, Changed, Expectation, Lines
from agentsd.envs.toolworld.tasks_base import GoldError, _acct, _day, _pay_expect, _pick, template
from agentsd.envs.toolworld.world import add_order, fmt_money

__all__ = ["ProductPrice", "LatestOrderStatus", "BuyProduct", "ReturnOrder", "BuyCheapestInCategory"]


@template(1, "train", ("shop",), "Product search needs no login.")
class ProductPrice:
    def setup(w, rng, d):
        return {"product": _pick(rng, list(w.tables["products"].values()))["name"]}

    def instruction(p):
        return f"How much does one '{p['product']}' cost in the shop? Answer in dollars."

    def solve(c, p):
        hits = c("shop__search_products", query=p["product"])["results"]
        return f"{next(h['price'] for h in hits if h['name'] == p['product']):.2f}"

    def expect(w, p):
        price = next(x["price"] for x in w.tables["products"].values() if x["name"] == p["product"])
        return Expectation(answer=fmt_money(price), answer_kind="number")


@template(2, "train", ("shop",), "Orders need a shop login; the newest order comes first.")
class LatestOrderStatus:
    def setup(w, rng, d):
        p = _pick(rng, list(w.tables["products"].values()))
        add_order(w, [(p, 1)], _day(w, -1), _pick(rng, ["processing", "shipped"]))
        return {}

    def instruction(p):
        return "What is the status of my most recent shop order? Answer with the status word."

    def solve(c, p):
        return c("shop__search_orders", access_token=c.token("shop"))["results"][0]["status"]

    def expect(w, p):
        return Expectation(answer=max(w.tables["orders"].values(), key=lambda o: (o["date"], o["id"]))["status"])


@template(2, "train", ("shop", "bank"), "Checkout pays from the bank account; buy the exact quantity.")
class BuyProduct:
    def setup(w, rng, d):
        p = _pick(rng, list(w.tables["products"].values()))
        qty = int(rng.integers(1, 4))
        p["stock"] = max(p["stock"], qty + 2)
        return {"product": p["name"], "qty": qty}

    def instruction(p):
        return f"Buy {p['qty']} x '{p['product']}' from the shop."

    def solve(c, p):
        tok = c.token("shop")
        hit = next(h for h in c("shop__search_products", query=p["product"])["results"] if h["name"] == p["product"])
        c("shop__add_to_cart", access_token=tok, product_id=hit["id"], quantity=p["qty"])
        c("shop__checkout", access_token=tok)

    def expect(w, p):
        prod = next(x for x in w.tables["products"].values() if x["name"] == p["product"])
        cost = prod["price"] * p["qty"]
        e = _pay_expect(w, [(SHOP_ACCOUNT, cost)])
        e.added.append(Added("orders", {"items": Lines(((prod["id"], p["qty"]),)), "total": cost}, "order placed"))
        e.changed.append(Changed("products", prod["id"], {"stock": prod["stock"] - p["qty"]}, "stock reduced"))
        return e


@template(2, "test", ("shop", "bank"), "Only delivered orders can be returned; find the one with this product.")
class ReturnOrder:
    def setup(w, rng, d):
        used = {i["product_id"] for o in w.tables["orders"].values() for i in o["items"]}
        free = [x for x in w.tables["products"].values() if x["id"] not in used]
        prod = _pick(rng, free)
        o = add_order(w, [(prod, 1)], _day(w, -int(rng.integers(5, 25))), "delivered")
        return {"product": prod["name"], "order_id": o["id"]}

    def instruction(p):
        return (f"Return my delivered shop order that contains '{p['product']}' and tell me how much "
                "money was refunded.")

    def solve(c, p):
        tok = c.token("shop")
        for o in c.pages("shop__search_orders", access_token=tok, status="delivered"):
            if any(i["name"] == p["product"] for i in o["items"]):
                return f"{c('shop__return_order', access_token=tok, order_id=o['id'])['refund']:.2f}"
        raise GoldError("order not found")

    def expect(w, p):
        o = w.tables["orders"][p["order_id"]]
        return Expectation(
            answer=fmt_money(o["total"]), answer_kind="number",
            changed=[Changed("orders", o["id"], {"status": "returned"}, "order returned"),
                     Changed("accounts", "bank", {"balance": _acct(w) + o["total"]}, "refund received")],
            added=[Added("transactions", {"receiver": w.user["email"], "amount": o["total"]}, "refund transaction")])


@template(3, "train", ("shop", "bank"),
          "Buy the cheapest product of the category; read every page of the category first.")
class BuyCheapestInCategory:
    def setup(w, rng, d):
        cats = sorted({p["category"] for p in w.tables["products"].values()})
        cat = _pick(rng, cats)
        for p in w.tables["products"].values():
            if p["category"] == cat:
                p["stock"] = max(p["stock"], 3)
        prods = sorted((p for p in w.tables["products"].values() if p["category"] == cat), key=lambda p: p["price"])
        if len(prods) > 1 and prods[0]["price"] == prods[1]["price"]:
            prods[0]["price"] -= 50
        return {"category": cat}

    def instruction(p):
        return f"Buy one unit of the cheapest product in the shop's '{p['category']}' category."

    def solve(c, p):
        prods = c.pages("shop__search_products", category=p["category"])
        best = min(prods, key=lambda x: x["price"])
        tok = c.token("shop")
        c("shop__add_to_cart", access_token=tok, product_id=best["id"], quantity=1)
        c("shop__checkout", access_token=tok)

    def expect(w, p):
        prod = min((x for x in w.tables["products"].values() if x["category"] == p["category"]),
                   key=lambda x: x["price"])
        e = _pay_expect(w, [(SHOP_ACCOUNT, prod["price"])])
        e.added.append(Added("orders", {"items": Lines(((prod["id"], 1),))}, "order placed"))
        e.changed.append(Changed("products", prod["id"], {"stock": prod["stock"] - 1}, "stock reduced"))
        return e
