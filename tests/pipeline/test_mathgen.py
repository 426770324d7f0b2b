from pipeline.mathgen import generate_problems


def test_problems_are_deterministic_and_their_code_computes_the_answer():
    problems = generate_problems(60, seed=1)
    assert [p.text() for p in problems] == [p.text() for p in generate_problems(60, seed=1)]
    assert {p.level for p in problems} == {1, 2, 3, 4, 5}
    for p in problems:
        namespace = {}
        exec(p.code, namespace)
        result = namespace[p.entry_point](*p.inputs)
        if p.topic == "fractions":
            assert f"{result[0]}/{result[1]}" == p.answer or (result[1] == 1 and str(result[0]) == p.answer)
        elif p.topic == "quadratic equations":
            assert p.answer == f"x = {result[0]} or x = {result[1]}"
        elif p.topic == "linear equations":
            assert p.answer == f"x = {result}"
        else:
            assert str(result) == p.answer
