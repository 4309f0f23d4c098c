"""Label colours shared by the sample data and the widgets (no napari import here)."""

# colour of each label value (index = value); 0 is "not annotated"
PALETTE = ["transparent", "#4a90e2", "#ffd400", "#2ecc71", "#ff4fd8", "#00e5ff", "#ff7f0e", "#b07aff",
           "#e74c3c", "#8fd14f"]


def label_color(value: int) -> str:
    return PALETTE[value] if value < len(PALETTE) else PALETTE[2 + (value - 2) % (len(PALETTE) - 2)]


def label_color_dict(n_values: int, transparent_background: bool = False) -> dict:
    """{label value: colour} for values 0..n_values, None for any other value."""
    colors = {None: "transparent", 0: "transparent"}
    for v in range(1, n_values + 1):
        colors[v] = "transparent" if (v == 1 and transparent_background) else label_color(v)
    return colors
