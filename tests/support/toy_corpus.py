"""A tiny corpus with a known answer per question, shared by the RAG and RAG-drift tests."""

CORPUS = {
    "kites.md": "# Kites\n\n## Flying\n\nA kite needs steady wind of 10 to 30 km/h; launch it with your back to the "
                "wind and let the line out slowly.\n\n## Building\n\nA diamond kite is a paper sail on two crossed "
                "sticks with a tail for stability.",
    "tea.md": "# Tea\n\n## Brewing\n\nGreen tea brews at 80 degrees for two minutes; black tea wants boiling water "
              "and four minutes.\n\n## Growing\n\nTea bushes grow on misty hillsides and are plucked by hand.",
    "bikes.md": "# Bicycles\n\n## Gears\n\nA derailleur moves the chain between sprockets so the rider can keep a "
                "steady cadence on hills.\n\n## Tyres\n\nRoad tyres run at six to eight bar; check the pressure "
                "every week.",
    "owls.txt": "Owls hunt at night. Their feathers have soft fringes, so they fly almost silently, and their "
                "asymmetric ears locate mice under snow.",
}
QUESTIONS = [("At what temperature should green tea brew?", "tea.md"),
             ("How do owls fly so quietly?", "owls.txt"),
             ("How much wind does a kite need?", "kites.md"),
             ("What pressure for road bike tyres?", "bikes.md")]
