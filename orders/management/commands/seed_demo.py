import random
from decimal import Decimal

from django.core.management.base import BaseCommand

from orders import services as order_services
from orders.models import Order
from users import services as user_services
from users.models import User

DEMO_ADMIN = ("admin", "admin@example.com")


class Command(BaseCommand):
    help = "Demo data for the local embedded run: customers, orders moving through statuses, optionally a demo admin."

    def add_arguments(self, parser):
        parser.add_argument("--admin", action="store_true", help="create the demo admin (local mode only)")
        parser.add_argument("--customers", type=int, default=5)
        parser.add_argument("--orders", type=int, default=10)

    def handle(self, *args, **options):
        if options["admin"]:
            self._admin()
        if Order.objects.exists():
            self.stdout.write("demo data already present")
            return
        rng = random.Random(7)
        customers = [
            user_services.user_create(
                email=f"customer{i}@example.com", first_name=f"Customer{i}", last_name="Demo", phone=f"+1555000{i:04d}"
            )
            for i in range(1, options["customers"] + 1)
        ]
        walk = ["confirmed", "in_progress", "done"]
        for i in range(options["orders"]):
            order = order_services.order_create(
                user=rng.choice(customers),
                title=f"Demo order {i + 1}",
                amount=Decimal(rng.randint(10, 500)),
                quantity=1,
            )
            for status in walk[: rng.randint(0, 3)]:
                order = order_services.order_change_status(order=order, status=status)
        self.stdout.write(f"created {len(customers)} customers and {options['orders']} orders")

    def _admin(self):
        username, email = DEMO_ADMIN
        user = User.objects.filter(username=username).first()
        if user is None:
            User.objects.create_superuser(username=username, email=email, password="admin")
        self.stdout.write(f"demo admin: {username} / admin  (local embedded mode only)")
