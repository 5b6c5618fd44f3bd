"""Class name lists used by the embedded defaults and the benchmarks."""

# UCF101, in the official classInd.txt order (label i is UCF101[i]).
UCF101 = """
ApplyEyeMakeup ApplyLipstick Archery BabyCrawling BalanceBeam BandMarching BaseballPitch
Basketball BasketballDunk BenchPress Biking Billiards BlowDryHair BlowingCandles
BodyWeightSquats Bowling BoxingPunchingBag BoxingSpeedBag BreastStroke BrushingTeeth
CleanAndJerk CliffDiving CricketBowling CricketShot CuttingInKitchen Diving Drumming
Fencing FieldHockeyPenalty FloorGymnastics FrisbeeCatch FrontCrawl GolfSwing Haircut
Hammering HammerThrow HandstandPushups HandstandWalking HeadMassage HighJump HorseRace
HorseRiding HulaHoop IceDancing JavelinThrow JugglingBalls JumpingJack JumpRope Kayaking
Knitting LongJump Lunges MilitaryParade Mixing MoppingFloor Nunchucks ParallelBars
PizzaTossing PlayingCello PlayingDaf PlayingDhol PlayingFlute PlayingGuitar PlayingPiano
PlayingSitar PlayingTabla PlayingViolin PoleVault PommelHorse PullUps Punch PushUps
Rafting RockClimbingIndoor RopeClimbing Rowing SalsaSpin ShavingBeard Shotput
SkateBoarding Skiing Skijet SkyDiving SoccerJuggling SoccerPenalty StillRings
SumoWrestling Surfing Swing TableTennisShot TaiChi TennisSwing ThrowDiscus
TrampolineJumping Typing UnevenBars VolleyballSpiking WalkingWithDog WallPushups
WritingOnBoard YoYo
""".split()

assert len(UCF101) == 101 and len(set(UCF101)) == 101, len(UCF101)
