"""ServeCore: sessions, the Semantic-Variable graph, objective deduction, and dispatch onto
engines. Pure Python: nothing here imports torch (engines sit behind `EngineClient`)."""
