"""Graders: OpenAI's grader JSON shapes (string_check, text_similarity, score_model,
label_model, python, multi), validated and scored here once, for the grader endpoints and
for what runs them later (evals, reinforcement fine-tuning, curation)."""
