"""Label colours shared by the sample data and the widgets (no napari import here)."""

# colour of each annotation label value (index = value); 0 is "not annotated"
PALETTE = ["transparent", "#4a90e2", "#ffd400", "#2ecc71", "#ff4fd8", "#00e5ff", "#ff7f0e", "#b07aff",
           "#e74c3c", "#8fd14f"]
# colours of predicted classes (2..): none of the first annotation colours, so a prediction never
# looks like the user's own strokes
PREDICTION_PALETTE = ["#ff2fa0", "#00d1c1", "#c8ff00", "#8c5cff", "#ff8c00", "#ffffff"]
MAX_COLOURED = 255  # every value a uint8 annotation layer can hold gets a colour


def label_color(value: int) -> str:
    return PALETTE[value] if value < len(PALETTE) else PALETTE[2 + (value - 2) % (len(PALETTE) - 2)]


def prediction_color(value: int) -> str:
    return PREDICTION_PALETTE[(value - 2) % len(PREDICTION_PALETTE)]


def label_color_dict(n_values: int = MAX_COLOURED, transparent_background: bool = False,
                     prediction: bool = False) -> dict:
    """{label value: colour} for 0..max(n_values, 255): every paintable value is visible, whatever
    the number of named classes (a class painted with 3 must show)."""
    colors = {None: "transparent", 0: "transparent"}
    for v in range(1, max(n_values, MAX_COLOURED) + 1):
        if v == 1:
            colors[v] = "transparent" if transparent_background else label_color(1)
        else:
            colors[v] = prediction_color(v) if prediction else label_color(v)
    return colors
