"""Products and prices (integer fen): the only source of an order's amount."""
import dataclasses
import json

DEMO_PRODUCTS = [
    {"id": "coffee", "name": "Americano 美式咖啡", "price": 1200},
    {"id": "tea", "name": "Oolong tea 乌龙茶", "price": 800},
    {"id": "cake", "name": "Cheesecake 芝士蛋糕", "price": 2600},
]


MAX_PRICE = 2 ** 31 - 1  # fen: WeChat's total_fee is a 32-bit integer


class CatalogError(ValueError):
    """The catalog file is missing or malformed."""


@dataclasses.dataclass(frozen=True)
class Product:
    id: str
    name: str
    price: int  # fen


class Catalog:
    def __init__(self, products):
        self._products = {}
        for raw in products:
            product = _product(raw)
            if product.id in self._products:
                raise CatalogError("duplicate product id %r" % product.id)
            self._products[product.id] = product
        if not self._products:
            raise CatalogError("the catalog has no products")

    @classmethod
    def from_file(cls, path):
        """Load `{"products": [{"id", "name", "price"}]}` (or a bare list) from JSON."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise CatalogError("cannot read catalog %s: %s" % (path, exc)) from None
        try:
            return cls(data.get("products", []) if isinstance(data, dict) else data)
        except CatalogError as exc:
            raise CatalogError("catalog %s: %s" % (path, exc)) from None

    @classmethod
    def demo(cls):
        return cls(DEMO_PRODUCTS)

    def get(self, product_id):
        """The product, or None for an unknown id (any type)."""
        return self._products.get(product_id) if isinstance(product_id, str) else None

    def all(self):
        return list(self._products.values())


def _product(raw):
    if not isinstance(raw, dict):
        raise CatalogError("a product must be an object, got %r" % (raw,))
    pid, name, price = raw.get("id"), raw.get("name"), raw.get("price")
    if not isinstance(pid, str) or not pid or len(pid) > 64:
        raise CatalogError("product id must be a non-empty string: %r" % (pid,))
    if not isinstance(name, str) or not name.strip():
        raise CatalogError("product %s needs a name" % pid)
    if type(price) is not int or not 0 < price <= MAX_PRICE:
        raise CatalogError("product %s: price must be a positive integer in fen, at most %d" % (pid, MAX_PRICE))
    return Product(pid, name, price)
