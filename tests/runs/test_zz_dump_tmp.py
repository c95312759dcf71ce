from django.urls import reverse
from tests.world import build_world

def test_dump(client_for, admin_user):
    w = build_world(admin_user)
    c = client_for(admin_user)
    for url in (reverse("runs:prompt_edit", args=[w["prompt"].pk]), reverse("runs:model_edit", args=[w["model"].pk]), reverse("runs:repositories")):
        body = c.get(url).content.decode()
        print(body[body.index("<main"):][:3500])
