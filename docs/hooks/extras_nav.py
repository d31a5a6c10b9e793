"""mkdocs hook: the pages of docs/extras/ go under "Extras" in the navigation, titled by their first heading.

They are found, not listed in mkdocs.yml: deleting an extra's page with the extra leaves the site building."""

from pathlib import Path


def on_config(config, **kwargs):
    pages = sorted(Path(config["docs_dir"], "extras").glob("*.md"))
    if pages:
        config["nav"].append({"Extras": [{title(page): f"extras/{page.name}"} for page in pages]})
    return config


def title(page: Path) -> str:
    first = next((line for line in page.read_text().splitlines() if line.startswith("# ")), f"# {page.stem}")
    return first[2:].strip()
