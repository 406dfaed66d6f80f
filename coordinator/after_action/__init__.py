"""The after-action record of an incident (`loa incident report`, and the console's button):
its timeline, the times between its steps, who approved what and how long each level took,
the exact texts sent, reach per channel and area from the delivery records, corrections,
and a chart of deliveries over time."""
