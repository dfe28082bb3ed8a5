"""The Perseus operator dashboard (Textual), built only on perseus_core's public API.

Start it with `perseus` or `perseus tui`; build it in code with
`perseus_tui.app.create_app(settings)`.
"""
