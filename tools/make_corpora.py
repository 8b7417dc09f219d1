#!/usr/bin/env python3
"""Writes phi-zoo's embedded default corpora (datasets/assets/*.jsonl), generated here from
templates with a fixed seed: no text comes from the web.

- code.jsonl: small Python exercises (docstring, solution, asserts). Every solution is run against
  its asserts before it is written, so the code corpus holds only working programs.
- synthetic.jsonl: textbook-style units (topic x audience x style) with worked examples whose
  numbers are computed here.
- web.jsonl: short web-like pages (how-tos, Q&A posts, notices, reports) for the web slot of the
  phi-1.5-web mixture.
- exercises.jsonl: prompt-completion pairs in the CodeExercises manner for fine-tuning: the prompt
  is a function's signature and docstring, the completion its (tested) body.

Usage: python3 tools/make_corpora.py [--out datasets/assets] [--seed 0]
"""

import argparse
import json
import math
import random
from pathlib import Path

# ----------------------------------------------------------------------------- code exercises

def ex_sum_multiples(r):
    k, n = r.choice([3, 4, 5, 6, 7]), r.randint(10, 60)
    name = r.choice(["sum_of_multiples", "multiples_total", "add_multiples"])
    var = r.choice(["limit", "n", "upper"])
    code = f'''def {name}(k, {var}):
    """Return the sum of all positive multiples of k that are smaller than {var}."""
    total = 0
    for value in range(k, {var}, k):
        total += value
    return total
'''
    tests = [f"{name}({k}, {n})", f"{name}({k + 1}, {n + 7})", f"{name}(2, 1)"]
    return code, tests


def ex_count_vowels(r):
    name = r.choice(["count_vowels", "vowel_count", "number_of_vowels"])
    word = r.choice(["banana", "education", "rhythm", "queueing", "Programming", "AEIOU", "sky"])
    code = f'''def {name}(text):
    """Count the vowels (a, e, i, o, u, in either case) in text."""
    return sum(1 for ch in text.lower() if ch in "aeiou")
'''
    return code, [f"{name}({word!r})", f"{name}('')", f"{name}('Hello World')"]


def ex_reverse_words(r):
    name = r.choice(["reverse_words", "words_backwards", "flip_word_order"])
    sentence = r.choice(["the quick brown fox", "data beats opinions", "one", "learn to code every day"])
    code = f'''def {name}(sentence):
    """Return the words of sentence in reverse order, separated by single spaces."""
    return " ".join(reversed(sentence.split()))
'''
    return code, [f"{name}({sentence!r})", f"{name}('  spaced   out ')"]


def ex_fibonacci(r):
    name = r.choice(["fibonacci", "fib", "nth_fibonacci"])
    style = r.choice(["loop", "pair"])
    if style == "loop":
        body = '''    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
'''
    else:
        body = '''    if n < 2:
        return n
    previous, current = 0, 1
    for _ in range(n - 1):
        previous, current = current, previous + current
    return current
'''
    code = f'''def {name}(n):
    """Return the n-th Fibonacci number, with fibonacci(0) == 0 and fibonacci(1) == 1."""
{body}'''
    return code, [f"{name}({i})" for i in (0, 1, 2, r.randint(5, 25))]


def ex_is_prime(r):
    name = r.choice(["is_prime", "prime", "check_prime"])
    code = f'''def {name}(n):
    """Return True if n is a prime number, False otherwise."""
    if n < 2:
        return False
    divisor = 2
    while divisor * divisor <= n:
        if n % divisor == 0:
            return False
        divisor += 1
    return True
'''
    return code, [f"{name}({v})" for v in (1, 2, r.randint(3, 200), r.randint(200, 5000), 97)]


def ex_gcd(r):
    name = r.choice(["gcd", "greatest_common_divisor", "highest_common_factor"])
    code = f'''def {name}(a, b):
    """Return the greatest common divisor of two non-negative integers (Euclid's algorithm)."""
    while b:
        a, b = b, a % b
    return a
'''
    a, b = r.randint(1, 500), r.randint(1, 500)
    return code, [f"{name}({a}, {b})", f"{name}({a * 6}, {b * 6})", f"{name}(0, 9)"]


def ex_factorial(r):
    name = r.choice(["factorial", "fact", "product_up_to"])
    code = f'''def {name}(n):
    """Return n! for a non-negative integer n."""
    result = 1
    for value in range(2, n + 1):
        result *= value
    return result
'''
    return code, [f"{name}({v})" for v in (0, 1, r.randint(3, 12))]


def ex_running_max(r):
    name = r.choice(["running_max", "prefix_maximum", "cumulative_max"])
    values = [r.randint(-20, 40) for _ in range(r.randint(3, 8))]
    code = f'''def {name}(values):
    """Return a list whose i-th item is the largest of values[0..i]."""
    result = []
    best = None
    for value in values:
        if best is None or value > best:
            best = value
        result.append(best)
    return result
'''
    return code, [f"{name}({values})", f"{name}([])"]


def ex_celsius(r):
    name = r.choice(["celsius_to_fahrenheit", "to_fahrenheit", "c_to_f"])
    code = f'''def {name}(celsius):
    """Convert a temperature from degrees Celsius to degrees Fahrenheit."""
    return celsius * 9 / 5 + 32
'''
    return code, [f"{name}({v})" for v in (0, 100, -40, r.randint(-30, 45))]


def ex_palindrome(r):
    name = r.choice(["is_palindrome", "palindrome", "reads_same_backwards"])
    word = r.choice(["level", "Racecar", "python", "A man a plan a canal Panama", "noon", "abca"])
    code = f'''def {name}(text):
    """Return True if text reads the same forwards and backwards, ignoring case and spaces."""
    cleaned = "".join(ch.lower() for ch in text if not ch.isspace())
    return cleaned == cleaned[::-1]
'''
    return code, [f"{name}({word!r})", f"{name}('')"]


def ex_word_frequency(r):
    name = r.choice(["word_frequencies", "count_words", "word_counts"])
    text = r.choice(["the cat and the hat", "a b a c b a", "to be or not to be", "single"])
    code = f'''def {name}(text):
    """Return a dict mapping each word of text (split on whitespace) to how often it occurs."""
    counts = {{}}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts
'''
    return code, [f"{name}({text!r})"]


def ex_flatten(r):
    name = r.choice(["flatten", "flatten_once", "concat_lists"])
    nested = [[r.randint(0, 9) for _ in range(r.randint(0, 3))] for _ in range(r.randint(1, 4))]
    code = f'''def {name}(lists):
    """Join a list of lists into one list, keeping the order of the items."""
    result = []
    for inner in lists:
        result.extend(inner)
    return result
'''
    return code, [f"{name}({nested})"]


def ex_chunks(r):
    name = r.choice(["chunk", "split_into_chunks", "batches"])
    size = r.randint(1, 4)
    values = list(range(r.randint(0, 10)))
    code = f'''def {name}(items, size):
    """Split items into consecutive lists of length size; the last one may be shorter."""
    return [items[start:start + size] for start in range(0, len(items), size)]
'''
    return code, [f"{name}({values}, {size})"]


def ex_caesar(r):
    name = r.choice(["caesar_shift", "rotate_letters", "caesar_cipher"])
    shift = r.randint(1, 25)
    word = r.choice(["hello", "Attack at Dawn", "xyz", "Phi models"])
    code = f'''def {name}(text, shift):
    """Shift every letter of text by shift places in the alphabet, keeping case; other
    characters stay as they are."""
    result = []
    for ch in text:
        if ch.isalpha():
            base = ord("A") if ch.isupper() else ord("a")
            result.append(chr((ord(ch) - base + shift) % 26 + base))
        else:
            result.append(ch)
    return "".join(result)
'''
    return code, [f"{name}({word!r}, {shift})", f"{name}({name}({word!r}, {shift}), {26 - shift})"]


def ex_binary_search(r):
    name = r.choice(["binary_search", "find_index", "search_sorted"])
    values = sorted(r.sample(range(0, 100), r.randint(1, 12)))
    target = r.choice(values + [101])
    code = f'''def {name}(values, target):
    """Return the index of target in the sorted list values, or -1 if it is absent."""
    low, high = 0, len(values) - 1
    while low <= high:
        middle = (low + high) // 2
        if values[middle] == target:
            return middle
        if values[middle] < target:
            low = middle + 1
        else:
            high = middle - 1
    return -1
'''
    return code, [f"{name}({values}, {target})", f"{name}([], 3)"]


def ex_bubble_sort(r):
    name = r.choice(["bubble_sort", "sort_numbers", "simple_sort"])
    values = [r.randint(-50, 50) for _ in range(r.randint(0, 9))]
    code = f'''def {name}(values):
    """Return a sorted copy of values, using bubble sort."""
    items = list(values)
    for end in range(len(items) - 1, 0, -1):
        for i in range(end):
            if items[i] > items[i + 1]:
                items[i], items[i + 1] = items[i + 1], items[i]
    return items
'''
    return code, [f"{name}({values})"]


def ex_transpose(r):
    name = r.choice(["transpose", "matrix_transpose", "swap_rows_and_columns"])
    rows, cols = r.randint(1, 4), r.randint(1, 4)
    matrix = [[r.randint(0, 9) for _ in range(cols)] for _ in range(rows)]
    code = f'''def {name}(matrix):
    """Return the transpose of a rectangular matrix given as a list of rows."""
    return [list(column) for column in zip(*matrix)]
'''
    return code, [f"{name}({matrix})"]


def ex_run_length(r):
    name = r.choice(["run_length_encode", "compress", "encode_runs"])
    text = r.choice(["aaabccdddd", "abc", "", "zzzzzz", "aabbaa"])
    code = f'''def {name}(text):
    """Encode text as a list of (character, run length) pairs."""
    runs = []
    for ch in text:
        if runs and runs[-1][0] == ch:
            runs[-1] = (ch, runs[-1][1] + 1)
        else:
            runs.append((ch, 1))
    return runs
'''
    return code, [f"{name}({text!r})"]


def ex_dedupe(r):
    name = r.choice(["unique_in_order", "dedupe", "remove_duplicates"])
    values = [r.randint(0, 5) for _ in range(r.randint(0, 10))]
    code = f'''def {name}(values):
    """Return the distinct items of values, each where it first appears."""
    seen = set()
    result = []
    for value in values:
        if value not in seen:
            seen.add(value)
            result.append(value)
    return result
'''
    return code, [f"{name}({values})"]


def ex_digits(r):
    name = r.choice(["digit_sum", "sum_of_digits", "add_digits"])
    n = r.randint(0, 10**6)
    code = f'''def {name}(n):
    """Return the sum of the decimal digits of a non-negative integer n."""
    total = 0
    while n > 0:
        total += n % 10
        n //= 10
    return total
'''
    return code, [f"{name}({n})", f"{name}(0)"]


def ex_class_stack(r):
    cls = r.choice(["Stack", "LifoStack", "Pile"])
    pushes = [r.randint(0, 9) for _ in range(r.randint(1, 5))]
    code = f'''class {cls}:
    """A last-in, first-out collection."""

    def __init__(self):
        self._items = []

    def push(self, item):
        self._items.append(item)

    def pop(self):
        """Remove and return the most recently pushed item."""
        if not self._items:
            raise IndexError("pop from an empty stack")
        return self._items.pop()

    def __len__(self):
        return len(self._items)


def drain(values):
    """Push every value onto a new stack, then pop them all; returns the popped order."""
    stack = {cls}()
    for value in values:
        stack.push(value)
    return [stack.pop() for _ in range(len(stack))]
'''
    return code, [f"drain({pushes})"]


EXERCISES = [ex_sum_multiples, ex_count_vowels, ex_reverse_words, ex_fibonacci, ex_is_prime, ex_gcd,
             ex_factorial, ex_running_max, ex_celsius, ex_palindrome, ex_word_frequency, ex_flatten,
             ex_chunks, ex_caesar, ex_binary_search, ex_bubble_sort, ex_transpose, ex_run_length,
             ex_dedupe, ex_digits, ex_class_stack]


def code_document(r):
    """One exercise whose asserts hold: the solution is executed before the text is written."""
    make = r.choice(EXERCISES)
    code, calls = make(r)
    namespace = {}
    exec(code, namespace)  # the generator's own template code, not external input
    asserts = [f"assert {call} == {eval(call, namespace)!r}" for call in calls]
    text = code + "\n\n" + "\n".join(asserts) + "\n"
    check = {}
    exec(text, check)  # every assert must pass as written
    return text

def exercise_pair(r):
    """A {"prompt", "completion"} pair: signature + docstring, then the body, which must pass."""
    while True:
        make = r.choice(EXERCISES)
        code, calls = make(r)
        if not code.startswith("def "):
            continue
        first = code.find('"""')
        close = code.find('"""', first + 3)
        if first < 0 or close < 0:
            continue
        cut = code.index("\n", close) + 1
        namespace = {}
        exec(code, namespace)  # the generator's own template code, not external input
        for call in calls:
            eval(call, namespace)
        return {"prompt": code[:cut], "completion": code[cut:]}

# ----------------------------------------------------------------------------- textbook units

AUDIENCES = {
    "young children": ("Let's learn something fun today!", "Remember: practice makes it easy. Try one on your own!"),
    "high school students": ("In this section we build the idea step by step.", "Check your understanding with the exercises at the end of the chapter."),
    "college students": ("We now develop the topic with some care.", "In the next unit we generalise these results."),
    "professionals": ("This unit reviews the essentials and the common pitfalls.", "Keep these checks in mind when you meet the problem at work."),
}

STYLES = ["textbook", "story", "worked examples"]


def unit_percentages(r, audience):
    price, pct = r.randint(20, 400), r.choice([5, 10, 15, 20, 25, 30, 40, 50])
    off = price * pct / 100
    return "Percentages", (
        f"A percentage is a fraction with denominator 100: {pct}% means {pct} out of every 100. "
        f"To find {pct}% of a number, multiply the number by {pct} and divide by 100.\n\n"
        f"Example. A jacket costs {price} dollars and is sold at {pct}% off. The discount is "
        f"{price} × {pct} / 100 = {off:g} dollars, so the new price is {price} − {off:g} = {price - off:g} dollars.\n\n"
        f"A common mistake is to subtract the percentage itself: {price} − {pct} = {price - pct} is not the sale price."
    )


def unit_fractions(r, audience):
    a, b, c, d = r.randint(1, 9), r.randint(2, 12), r.randint(1, 9), r.randint(2, 12)
    num, den = a * d + c * b, b * d
    g = math.gcd(num, den)
    return "Adding fractions", (
        f"To add two fractions, first give them a common denominator. For {a}/{b} + {c}/{d}, the product "
        f"{b} × {d} = {den} works as a common denominator.\n\n"
        f"Rewrite each fraction: {a}/{b} = {a * d}/{den} and {c}/{d} = {c * b}/{den}. Now add the numerators: "
        f"{a * d} + {c * b} = {num}, giving {num}/{den}.\n\n"
        + (f"Both {num} and {den} are divisible by {g}, so the sum simplifies to {num // g}/{den // g}."
           if g > 1 else f"{num} and {den} share no factor, so {num}/{den} is already in lowest terms.")
    )


def unit_speed(r, audience):
    dist, hours = r.randint(20, 600), r.choice([1, 2, 3, 4, 5, 8])
    return "Speed, distance and time", (
        f"Speed tells us how far something travels in each unit of time: speed = distance ÷ time.\n\n"
        f"Example. A train covers {dist} kilometres in {hours} hours. Its average speed is "
        f"{dist} ÷ {hours} = {dist / hours:.2f} kilometres per hour.\n\n"
        f"Turning the formula around, distance = speed × time: at the same speed the train would cover "
        f"{dist / hours:.2f} × {hours + 1} = {dist / hours * (hours + 1):.2f} kilometres in {hours + 1} hours."
    )


def unit_area(r, audience):
    w, h, rad = r.randint(2, 30), r.randint(2, 30), r.randint(1, 12)
    return "Area and perimeter", (
        f"The area of a rectangle is its width times its height; its perimeter is twice the sum of width and height.\n\n"
        f"A rectangle {w} cm wide and {h} cm high has area {w} × {h} = {w * h} square centimetres and perimeter "
        f"2 × ({w} + {h}) = {2 * (w + h)} cm.\n\n"
        f"For a circle of radius {rad} cm, the area is π × {rad}² ≈ {math.pi * rad * rad:.2f} square centimetres "
        f"and the circumference is 2 × π × {rad} ≈ {2 * math.pi * rad:.2f} cm."
    )


def unit_loops(r, audience):
    n = r.randint(3, 9)
    squares = [i * i for i in range(1, n + 1)]
    return "Loops in programming", (
        "A loop repeats a block of instructions. In Python, a for loop visits each item of a sequence in turn.\n\n"
        f"For example, this loop prints the squares of the numbers from 1 to {n}:\n\n"
        f"    for number in range(1, {n + 1}):\n        print(number * number)\n\n"
        f"It prints {', '.join(map(str, squares))}. The range stops before its second argument, which is why "
        f"we wrote {n + 1} to include {n}."
    )


def unit_variables(r, audience):
    a, b = r.randint(1, 50), r.randint(1, 50)
    return "Variables and assignment", (
        "A variable is a name that refers to a value. Assignment, written with =, binds the name to the value "
        "on the right-hand side, after that side has been computed.\n\n"
        f"After `apples = {a}` and `apples = apples + {b}`, the name apples refers to {a + b}: the right-hand "
        f"side {a} + {b} is computed first, then the name is re-bound.\n\n"
        "This is why `x = x + 1` is not an equation to solve but an instruction: increase x by one."
    )


def unit_averages(r, audience):
    values = [r.randint(1, 100) for _ in range(r.randint(4, 7))]
    s = sorted(values)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return "Mean and median", (
        f"The mean of a list of numbers is their sum divided by how many there are. For {values}, the sum is "
        f"{sum(values)} and there are {len(values)} numbers, so the mean is {sum(values) / len(values):.2f}.\n\n"
        f"The median is the middle value once the numbers are sorted: {s}. "
        + (f"With an odd count, it is the middle one, {median}." if len(s) % 2 else
           f"With an even count, it is the average of the two middle values, {median:g}.")
        + "\n\nThe median is less affected by a single very large or very small value than the mean."
    )


def unit_binary(r, audience):
    n = r.randint(2, 255)
    return "Binary numbers", (
        "Computers store numbers in base 2, using only the digits 0 and 1. Each position is worth twice the one "
        "to its right: 1, 2, 4, 8, 16 and so on.\n\n"
        f"The number {n} is written {bin(n)[2:]} in binary. To check, add the place values where the digit is 1: "
        + " + ".join(str(1 << i) for i in reversed(range(n.bit_length())) if n >> i & 1)
        + f" = {n}.\n\nTo convert by hand, divide by 2 repeatedly and read the remainders from last to first."
    )


def unit_interest(r, audience):
    p, rate, years = r.randint(100, 5000), r.choice([2, 3, 4, 5, 6, 8]), r.randint(2, 10)
    amount = p * (1 + rate / 100) ** years
    return "Compound interest", (
        f"With compound interest, each year's interest is added to the balance and earns interest itself. "
        f"After n years at r% a year, a deposit P grows to P × (1 + r/100)^n.\n\n"
        f"Example. {p} dollars at {rate}% for {years} years grows to {p} × {1 + rate / 100:.2f}^{years} ≈ "
        f"{amount:.2f} dollars. Simple interest would give only {p + p * rate / 100 * years:.2f} dollars."
    )


def unit_triangle(r, audience):
    a, b = r.randint(3, 20), r.randint(3, 20)
    return "The Pythagorean theorem", (
        "In a right triangle, the square of the hypotenuse equals the sum of the squares of the other two sides: "
        "a² + b² = c².\n\n"
        f"If the two shorter sides are {a} and {b}, then c² = {a * a} + {b * b} = {a * a + b * b}, so "
        f"c = √{a * a + b * b} ≈ {math.hypot(a, b):.3f}.\n\n"
        "The theorem only holds for right triangles; for other triangles the law of cosines takes its place."
    )


UNITS = [unit_percentages, unit_fractions, unit_speed, unit_area, unit_loops, unit_variables, unit_averages,
         unit_binary, unit_interest, unit_triangle]


def textbook_document(r):
    audience = r.choice(list(AUDIENCES))
    style = r.choice(STYLES)
    title, body = r.choice(UNITS)(r, audience)
    opening, closing = AUDIENCES[audience]
    chapter = r.randint(1, 12)
    if style == "story":
        name = r.choice(["Maya", "Tom", "Aiko", "Luis", "Sara", "Ben", "Nadia", "Omar"])
        lead = f"{name} was puzzled by a homework problem about {title.lower()}, so {name} asked a teacher for help. The teacher explained:\n\n"
    elif style == "worked examples":
        lead = f"Worked examples: {title.lower()}.\n\n"
    else:
        lead = ""
    return f"Chapter {chapter}: {title} (for {audience})\n\n{opening}\n\n{lead}{body}\n\n{closing}\n"

# ----------------------------------------------------------------------------- web-like pages

CITIES = ["Riverton", "Lakeside", "Hillcrest", "Maple Bay", "Stonebridge", "Eastwood", "Brookfield", "Pine Ridge"]


def web_weather(r):
    city = r.choice(CITIES)
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
    lines = [f"{d}: {r.choice(['sunny', 'cloudy', 'rain', 'showers', 'windy', 'fog in the morning'])}, "
             f"high {r.randint(5, 32)}°C, low {r.randint(-5, 15)}°C" for d in days]
    return f"{city} weather this week\n\n" + "\n".join(lines) + "\n\nPosted by the community news desk."


def web_recipe(r):
    dish = r.choice(["vegetable soup", "pancakes", "rice salad", "lentil stew", "banana bread", "tomato pasta"])
    serves = r.randint(2, 8)
    steps = r.sample([
        "Wash and chop the vegetables.", "Heat a little oil in a large pan.", "Mix the dry ingredients in a bowl.",
        "Stir in the liquid slowly.", "Simmer for twenty minutes.", "Season to taste.",
        "Bake until golden.", "Let it rest for five minutes before serving."], 4)
    return (f"Easy {dish} (serves {serves})\n\nI make this every week and it never fails.\n\n"
            + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(steps))
            + f"\n\nComments ({r.randint(0, 40)}): Tried it, turned out great!")


def web_question(r):
    topic = r.choice([
        ("my bike chain keeps slipping", "Check chain wear with a gauge first; a stretched chain skips on worn cogs. Clean it and adjust the derailleur limit screws."),
        ("how do I keep basil alive indoors", "Give it at least six hours of light, water when the top of the soil is dry, and pinch off the flower buds."),
        ("what is a good first programming language", "Pick one with a friendly community and lots of beginner material; Python is a common choice."),
        ("why does my bread not rise", "Old yeast or water that is too hot are the usual causes. Test the yeast in warm water with a pinch of sugar."),
        ("how to study for a maths exam", "Work through past problems without looking at the answers, and explain each step out loud."),
    ])
    user = r.choice(["user123", "greenfinger", "codenewbie", "weekend_baker", "rider_77", "quietreader"])
    return (f"Question from {user}: {topic[0]}?\n\nI have tried a few things already but nothing works. Any tips?\n\n"
            f"Best answer ({r.randint(2, 90)} votes): {topic[1]}")


def web_notice(r):
    city = r.choice(CITIES)
    event = r.choice(["road works on Main Street", "the summer fair", "a library book sale", "a charity run", "the farmers' market"])
    return (f"{city} community notice\n\nPlease note {event} on {r.choice(['Saturday', 'Sunday', 'Friday evening'])}, "
            f"from {r.randint(7, 11)} am to {r.randint(1, 6)} pm. Parking will be limited near the town hall. "
            f"For questions, call the council office. Thank you for your patience.")


def web_scores(r):
    teams = r.sample(["Riverton Rovers", "Lakeside United", "Hillcrest FC", "Maple Bay Stars", "Stonebridge Town", "Eastwood Eagles"], 4)
    return ("Weekend results\n\n"
            + f"{teams[0]} {r.randint(0, 5)} - {r.randint(0, 5)} {teams[1]}\n"
            + f"{teams[2]} {r.randint(0, 5)} - {r.randint(0, 5)} {teams[3]}\n\n"
            + "Full match reports on the club pages.")


WEB = [web_weather, web_recipe, web_question, web_notice, web_scores]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "datasets" / "assets"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--code", type=int, default=2500)
    parser.add_argument("--synthetic", type=int, default=2500)
    parser.add_argument("--web", type=int, default=2000)
    parser.add_argument("--exercises", type=int, default=400)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, make, count in [("code", code_document, args.code), ("synthetic", textbook_document, args.synthetic),
                              ("web", lambda r: r.choice(WEB)(r), args.web)]:
        r = random.Random(f"{args.seed}-{name}")
        path = out / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for _ in range(count):
                f.write(json.dumps({"text": make(r)}, ensure_ascii=False) + "\n")
        print(f"{path}: {count} documents, {path.stat().st_size / 1e6:.2f} MB")
    r = random.Random(f"{args.seed}-exercises")
    path = out / "exercises.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(args.exercises):
            f.write(json.dumps(exercise_pair(r), ensure_ascii=False) + "\n")
    print(f"{path}: {args.exercises} pairs, {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
