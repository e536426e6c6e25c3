"""The Solara app of the end-to-end tests: a slider and a button whose server-side handlers
change the text on the page, so each change is a round trip over the kernel WebSocket."""

import solara

count = solara.reactive(0)
value = solara.reactive(3)


@solara.component
def Page():
    solara.Title("Portico Solara test")
    # A plain heading: solara.Markdown loads KaTeX from the CDN, which solara-assets lacks.
    solara.v.Html(tag="h1", children=["Portico Solara test"])
    solara.Button("Add one", on_click=lambda: count.set(count.value + 1))
    solara.Text(f"Clicked {count.value} times", classes=["clicks"])
    solara.SliderInt("Value", value=value, min=0, max=10)
    solara.Text(f"Squared on the server: {value.value ** 2}", classes=["squared"])
